package rbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// cli runs the rbd and ceph tools as the agent's cephx user.
type cli struct {
	rbd, ceph string
	conf      string
	user      string
	keyring   string
	pool      string
	timeout   time.Duration
}

// cliError is a failed call: its exit status is the errno (rbd and ceph
// return it), so errors.Is(err, syscall.ENOENT) works.
type cliError struct {
	args   []string
	errno  syscall.Errno
	stderr string
}

func (e *cliError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	// librbd prefixes its own lines with a timestamp; keep the tool's.
	var keep []string
	for l := range strings.SplitSeq(msg, "\n") {
		if strings.HasPrefix(l, "rbd: ") || strings.HasPrefix(l, "Error") || !strings.Contains(l, " -1 ") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	if len(keep) > 0 {
		msg = strings.Join(keep, "; ")
	}
	return fmt.Sprintf("%s: %s (%v)", strings.Join(e.args, " "), msg, e.errno)
}

func (e *cliError) Is(target error) bool { return e.errno != 0 && target == e.errno }

func (c *cli) common() []string {
	args := []string{"--conf", c.conf, "--id", c.user}
	if c.keyring != "" {
		args = append(args, "--keyring", c.keyring)
	}
	return args
}

// run runs `rbd --pool POOL args...` and returns its stdout.
func (c *cli) run(ctx context.Context, args ...string) ([]byte, error) {
	return c.exec(ctx, nil, c.rbd, append(append(c.common(), "--pool", c.pool), args...)...)
}

// runStdin is run with stdin (rbd import -).
func (c *cli) runStdin(ctx context.Context, stdin interface{ Read([]byte) (int, error) }, args ...string) ([]byte, error) {
	return c.exec(ctx, stdin, c.rbd, append(append(c.common(), "--pool", c.pool), args...)...)
}

// json runs rbd with --format json and decodes its output into v.
func (c *cli) json(ctx context.Context, v any, args ...string) error {
	out, err := c.run(ctx, append(args, "--format", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("rbd %s: output is not the JSON expected (%v): %.200q", strings.Join(args, " "), err, out)
	}
	return nil
}

// cephJSON runs `ceph args... --format json` and decodes its output.
func (c *cli) cephJSON(ctx context.Context, v any, args ...string) error {
	out, err := c.exec(ctx, nil, c.ceph, append(append(c.common(), "--connect-timeout", "30"), append(args, "--format", "json")...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("ceph %s: output is not the JSON expected (%v): %.200q", strings.Join(args, " "), err, out)
	}
	return nil
}

func (c *cli) exec(ctx context.Context, stdin interface{ Read([]byte) (int, error) }, tool string, args ...string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	timeout := c.timeout
	if stdin != nil {
		timeout = 0 // an import takes as long as its bytes; the caller's context bounds it
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	shown := append([]string{tool}, stripCommon(args)...)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: %w (is the Ceph cluster reachable? check --ceph-conf and the monitors)", strings.Join(shown, " "), ctx.Err())
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() > 0 {
		return nil, &cliError{args: shown, errno: syscall.Errno(exit.ExitCode()), stderr: stderr.String()}
	}
	if errors.Is(err, exec.ErrNotFound) {
		return nil, fmt.Errorf("%s not found: install ceph-common on the storage host: %w", tool, err)
	}
	return nil, fmt.Errorf("%s: %w: %s", strings.Join(shown, " "), err, strings.TrimSpace(stderr.String()))
}

// stripCommon leaves --conf/--id/--keyring/--pool out of an error message.
func stripCommon(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--conf", "--id", "--keyring", "--pool", "--connect-timeout":
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func errIs(err error, errno syscall.Errno) bool { return errors.Is(err, errno) }

// isEINVAL: rbd snap unprotect of a snapshot that is not protected.
func isEINVAL(err error) bool { return errIs(err, syscall.EINVAL) }
