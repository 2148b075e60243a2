package cli

import (
	"errors"
	"fmt"

	"github.com/sanboot/sanboot/ctl/printers"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes of sanbootctl. This is the only place they are defined;
// exitCodesHelp repeats them for the root command's --help.
const (
	ExitOK       = 0 // success
	ExitError    = 1 // any other error; the message says what went wrong
	ExitUsage    = 2 // unknown command or flag, bad flag value, wrong arguments
	ExitTimeout  = 3 // the condition was not met within --timeout while waiting
	ExitNotFound = 4 // the named object does not exist
	ExitConflict = 5 // already exists differently, changed concurrently, or refused in its current state
)

const exitCodesHelp = `Exit codes:
  0  success
  1  error (the message says what went wrong; the API server's message is shown as sent)
  2  usage error: unknown command or flag, bad flag value, wrong number of arguments
  3  timeout while waiting (provision --wait, deprovision --wait, wait)
  4  not found
  5  conflict: exists with a different spec, changed concurrently, or refused
     in its current state (e.g. deleting a protected image)`

// codeForRPC maps a gRPC status code to an exit code. Invalid arguments
// rejected by the server are plain errors (1): the usage was right, the
// values were not, and the server's message says which.
func codeForRPC(c codes.Code) int {
	switch c {
	case codes.OK:
		return ExitOK
	case codes.NotFound:
		return ExitNotFound
	case codes.AlreadyExists, codes.Aborted, codes.FailedPrecondition:
		return ExitConflict
	default:
		return ExitError
	}
}

// exitError is an error that carries its exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode attaches an exit code to err.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// exitCode returns the exit code for an error returned by a command's RunE.
// Several joined errors (one per named object) yield their common code, or
// 1 when they differ.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		code := -1
		for _, e := range j.Unwrap() {
			c := exitCode(e)
			if code == -1 {
				code = c
			} else if c != code {
				return ExitError
			}
		}
		if code == -1 {
			return ExitError
		}
		return code
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if fe := (*printers.FormatError)(nil); errors.As(err, &fe) {
		return ExitUsage
	}
	if s, ok := status.FromError(err); ok {
		return codeForRPC(s.Code())
	}
	return ExitError
}

// fixedExit ends a command with exactly this code, printing err (if any)
// without a usage hint. diff uses it: 1 means "differences", so its
// errors exit above 1.
type fixedExit struct {
	code int
	err  error
}

func (e *fixedExit) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func silentExit(code int) error { return &fixedExit{code: code} }
