package dial

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A read that ends Unavailable (its member died while answering) is made
// again; a write, or another error, is not. The invoker is a FAKE that
// fails the first calls.
func TestRetryReads(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "error reading from server: connection reset by peer")
	tests := []struct {
		name      string
		method    string
		failures  int   // calls that fail before one succeeds
		err       error // what they fail with
		wantCalls int
		wantCode  codes.Code
	}{
		{"list after a reset", "/sanboot.v1.Sanboot/ListNodes", 1, unavailable, 2, codes.OK},
		{"get after two resets", "/sanboot.v1.Sanboot/GetNode", 2, unavailable, 3, codes.OK},
		{"health check", "/grpc.health.v1.Health/Check", 1, unavailable, 2, codes.OK},
		{"read that keeps failing", "/sanboot.v1.Sanboot/ListAgents", 10, unavailable, 3, codes.Unavailable},
		{"write: not repeated", "/sanboot.v1.Sanboot/PutNodes", 1, unavailable, 1, codes.Unavailable},
		{"delete: not repeated", "/sanboot.v1.Sanboot/DeleteNode", 1, unavailable, 1, codes.Unavailable},
		{"read refused: not repeated", "/sanboot.v1.Sanboot/GetNode", 1, status.Error(codes.NotFound, "no such node"), 1, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			invoker := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
				calls++
				if calls <= tt.failures {
					return tt.err
				}
				return nil
			}
			err := retryReads([]time.Duration{time.Millisecond, time.Millisecond})(context.Background(), tt.method, nil, nil, nil, invoker)
			if calls != tt.wantCalls || status.Code(err) != tt.wantCode {
				t.Errorf("%d calls, %v; want %d calls, %v", calls, err, tt.wantCalls, tt.wantCode)
			}
		})
	}
}

// A read whose context ends is not made again.
func TestRetryReadsStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	invoker := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		calls++
		return status.Error(codes.Unavailable, "reset")
	}
	retryReads([]time.Duration{time.Hour})(ctx, "/sanboot.v1.Sanboot/ListNodes", nil, nil, nil, invoker)
	if calls != 1 {
		t.Errorf("%d calls after the context ended, want 1", calls)
	}
}
