package tgt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const redacted = "[redacted]"

// Error is a failed tgtadm call. Its text names the command line with every
// CHAP secret replaced by "[redacted]", and what tgtadm said.
type Error struct {
	// Args are tgtadm's arguments, secrets redacted.
	Args []string
	// Msg is what tgtadm wrote to stderr, trimmed, secrets redacted.
	Msg string
	// Hint says what to do, when the failure has a known cause.
	Hint string
	// Err is the exec error (an *exec.ExitError, a context error, ...).
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("tgtadm ")
	b.WriteString(strings.Join(e.Args, " "))
	b.WriteString(": ")
	if e.Msg != "" {
		b.WriteString(e.Msg)
	} else {
		b.WriteString(e.Err.Error())
	}
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// tgtadm's messages (usr/tgtadm_err.c); the exit status is 22 for all of them.
const (
	msgNoTarget  = "can't find the target"
	msgNoAccount = "can't find the account"
	msgNoACL     = "this access control rule does not exist"
	msgNoLUN     = "can't find the logical unit"
	msgLUNActive = "this logical unit is still active"
	msgExists    = "already exists"
	msgNoDaemon  = "tgt daemon" // "can't connect to the tgt daemon", "failed to send request hdr to tgt daemon"
	exitNotConn  = 107          // ENOTCONN: no tgtd behind the control socket
)

// said reports whether err is a tgtadm failure whose message contains msg.
func said(err error, msg string) bool {
	var e *Error
	return errors.As(err, &e) && strings.Contains(e.Msg, msg)
}

// tgtadm makes tgtadm's requests to one tgtd: itself, through tgtd's
// control socket (ipc.go), or by running a tgtadm executable.
type tgtadm struct {
	path        string // the tgtadm to run; "": speak to the socket
	controlPort int
	timeout     time.Duration
	requests    atomic.Uint64 // made, whatever their outcome
}

// run makes the request of tgtadm -C <port> args... and returns what
// tgtadm would print. The values in secrets are redacted from any error.
func (a *tgtadm) run(ctx context.Context, secrets []string, args ...string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", &Error{Args: redactArgs(args), Err: err}
	}
	if a.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	argv := append([]string{"-C", strconv.Itoa(a.controlPort)}, args...)
	a.requests.Add(1)
	if a.path == "" {
		return a.ask(ctx, argv, args)
	}
	cmd := exec.CommandContext(ctx, a.path, argv...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	e := &Error{Args: redactArgs(argv), Msg: redactText(strings.TrimSpace(stderr.String()), secrets), Err: err}
	if ctxErr := ctx.Err(); ctxErr != nil {
		e.Err = fmt.Errorf("%w (%v)", ctxErr, err)
	}
	var exitErr *exec.ExitError
	switch {
	case errors.Is(err, exec.ErrNotFound):
		e.Hint = "tgtadm is not installed: install Debian's tgt package (apt-get install tgt)"
	case errors.As(err, &exitErr) && (exitErr.ExitCode() == exitNotConn || strings.Contains(e.Msg, msgNoDaemon)):
		e.Hint = fmt.Sprintf("no tgtd answers on control port %d: start one (sanboot-agent --tgtd=managed starts its own) or point the agent at the right port", a.controlPort)
	}
	return "", e
}

// ask makes the request through tgtd's control socket; its errors are
// those run returns for a tgtadm process.
func (a *tgtadm) ask(ctx context.Context, argv, args []string) (string, error) {
	out, err := a.call(ctx, args)
	if err == nil {
		return out, nil
	}
	e := &Error{Args: redactArgs(argv), Err: err}
	var refused *StatusError
	switch {
	case errors.As(err, &refused):
		e.Msg = refused.Error()
	case ctx.Err() != nil:
		e.Err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED):
		e.Hint = fmt.Sprintf("no tgtd answers on control port %d (%s): start one (sanboot-agent --tgtd=managed starts its own) or point the agent at the right port",
			a.controlPort, socketPath(a.controlPort))
	}
	return "", e
}

// redactArgs returns a copy of args with the value of every --password
// option replaced.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		switch {
		case strings.HasPrefix(a, "--password="):
			out[i] = "--password=" + redacted
		case a == "--password" && i+1 < len(out):
			out[i+1] = redacted
		}
	}
	return out
}

// redactText replaces every secret in s.
func redactText(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}
