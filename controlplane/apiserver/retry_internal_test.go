package apiserver

import (
	"context"
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// A read that etcd answers "leader changed" or "no leader" is made again
// until the election is over; other errors end it at once.
func TestRetryElection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		errs      []error // what the calls return, in turn; then success
		wantCalls int
		wantErr   error
	}{
		{"no error", nil, 1, nil},
		{"leader changed twice", []error{rpctypes.ErrLeaderChanged, rpctypes.ErrLeaderChanged}, 3, nil},
		{"no leader, then leader changed", []error{rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged}, 3, nil},
		{"compacted: not an election", []error{rpctypes.ErrCompacted}, 1, rpctypes.ErrCompacted},
		{"an election that does not end", []error{rpctypes.ErrNoLeader, rpctypes.ErrNoLeader, rpctypes.ErrNoLeader,
			rpctypes.ErrNoLeader, rpctypes.ErrNoLeader, rpctypes.ErrNoLeader, rpctypes.ErrNoLeader}, 6, rpctypes.ErrNoLeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			v, err := retryElection(context.Background(), func() (int, error) {
				calls++
				if calls <= len(tc.errs) {
					return 0, tc.errs[calls-1]
				}
				return 42, nil
			})
			if calls != tc.wantCalls || !errors.Is(err, tc.wantErr) || (err == nil && v != 42) {
				t.Errorf("%d calls, %v, %v; want %d calls, error %v", calls, v, err, tc.wantCalls, tc.wantErr)
			}
		})
	}
}
