package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/internal/dial"
)

// rpcError turns the error of an API call into one whose text is the
// server's message (without gRPC's "rpc error: code = ... desc =" framing)
// and whose exit code follows the gRPC code. Failures to reach the server
// say where sanbootctl looked and what to check.
func (s *session) rpcError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted")
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Canceled:
		return errors.New("interrupted")
	case codes.Unavailable:
		msg = fmt.Sprintf("cannot reach %s: %s; check that sanboot-controlplane runs there, or point --endpoints at it", s.where(), msg)
		switch {
		case dial.IsNoLeader(err):
			// Reached, but cut off from the other members: its
			// message says so.
			msg = fmt.Sprintf("%s: %s", s.where(), st.Message())
		case s.settings != nil && !s.settings.TLS.Enabled():
			msg += "; if it serves TLS, give --cert, --key and --cacert (or cert:, key:, cacert: in the config file)"
		case !strings.Contains(msg, "connection refused"):
			// A refused handshake shows as an alert, or (TLS 1.3, the
			// client done first) as a reset or broken pipe.
			msg += "; if the TLS handshake failed: check that --cert was issued by the API's CA and has not expired (sanbootctl pki show FILE), and that the endpoint's address is in the API's certificate"
		}
	case codes.DeadlineExceeded:
		msg = fmt.Sprintf("%s did not answer in time (%s); raise --timeout or check the control plane", s.where(), msg)
	case codes.Unimplemented:
		msg = fmt.Sprintf("%s does not implement this call (%s); is it an older version than sanbootctl?", s.where(), msg)
	}
	if st.Code() == codes.Unavailable {
		return withCode(codeForRPC(st.Code()), &unreachableError{msg})
	}
	return withCode(codeForRPC(st.Code()), errors.New(msg))
}

// unreachableError is an API call that found no server: commands that go
// through many objects stop at the first one instead of repeating it.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string { return e.msg }

func isUnreachable(err error) bool {
	var ue *unreachableError
	return errors.As(err, &ue)
}
