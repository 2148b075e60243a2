package apiserver

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/internal/dial"
)

// A member whose etcd has no raft leader cannot serve writes or
// linearizable reads: etcd would hold each request until its own timeout
// (7 s) and clientv3 would make reads again for as long as the caller
// waits. So every call (but health checks) first checks that this
// member's etcd has a leader: if it has none, the call waits up to
// Config.LeaderWait for one (an election after a member's death takes a
// second or two, which callers need not hear about), then is answered
// dial.NoLeader, with the trailer that keeps gRPC from asking this member
// again (dial.NoRetryHere); the client makes it again on another member
// (package dial). The call's etcd requests also carry etcd's
// require-leader flag (clientv3.WithRequireLeader), so a leader lost
// mid-call fails them ("no leader": a write at once; a read after the
// retries that carry it through an election, retryElection) instead of
// after etcd's timeout; that too is answered NoLeader. A watch stream open on this
// member ends NoLeader once its etcd has had no leader for LeaderWait.

// DefaultLeaderWait is how long a call waits for this member's etcd to
// have a leader when Config.LeaderWait is 0: three of etcd's default
// election timeouts.
const DefaultLeaderWait = 3 * time.Second

// leaderPoll is how often a call waiting for a leader, or a stream, looks.
const leaderPoll = 100 * time.Millisecond

// LeaderServerOptions are the interceptors that refuse calls while this
// member's etcd has no leader (see above). Without Config.HasLeader they
// only mark etcd requests require-leader.
func (s *Server) LeaderServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if exempt(info.FullMethod) {
				return h(ctx, req)
			}
			err := s.awaitLeader(ctx)
			var resp any
			if err == nil {
				resp, err = h(clientv3.WithRequireLeader(ctx), req)
				err = s.lostLeader(err)
			}
			if dial.IsNoLeader(err) {
				grpc.SetTrailer(ctx, dial.NoRetryHere())
			}
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if exempt(info.FullMethod) {
				return h(srv, ss)
			}
			err := s.awaitLeader(ss.Context())
			if err == nil {
				err = s.lostLeader(s.whileLeader(ss, func(ss grpc.ServerStream) error { return h(srv, ss) }))
			}
			if dial.IsNoLeader(err) {
				ss.SetTrailer(dial.NoRetryHere())
			}
			return err
		}),
	}
}

// exempt: health checks answer whether the process serves, leader or not.
func exempt(method string) bool { return strings.HasPrefix(method, "/grpc.health.v1.Health/") }

// awaitLeader returns nil once this member's etcd has a leader, NoLeader
// after LeaderWait without one, or the context's error.
func (s *Server) awaitLeader(ctx context.Context) error {
	if s.cfg.HasLeader == nil || s.cfg.HasLeader() {
		return nil
	}
	deadline := time.NewTimer(s.cfg.LeaderWait)
	defer deadline.Stop()
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-deadline.C:
			return s.noLeader(fmt.Sprintf("none for %s", s.cfg.LeaderWait))
		case <-tick.C:
			if s.cfg.HasLeader() {
				return nil
			}
		}
	}
}

// whileLeader runs a stream's handler with a context that ends when this
// member's etcd has had no leader for LeaderWait; the stream then ends
// NoLeader.
func (s *Server) whileLeader(ss grpc.ServerStream, handle func(grpc.ServerStream) error) error {
	ctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ss.Context()))
	defer cancel(nil)
	if s.cfg.HasLeader != nil {
		go func() {
			tick := time.NewTicker(leaderPoll)
			defer tick.Stop()
			var since time.Time
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				switch {
				case s.cfg.HasLeader():
					since = time.Time{}
				case since.IsZero():
					since = time.Now()
				case time.Since(since) >= s.cfg.LeaderWait:
					cancel(s.noLeader(fmt.Sprintf("lost for %s while this stream was open", s.cfg.LeaderWait)))
					return
				}
			}
		}()
	}
	err := handle(&ctxStream{ServerStream: ss, ctx: ctx})
	if cause := context.Cause(ctx); dial.IsNoLeader(cause) {
		return cause
	}
	return err
}

// noLeader is this member's NoLeader answer.
func (s *Server) noLeader(detail string) error {
	name := s.cfg.Member
	if name == "" {
		name = "(unnamed)"
	}
	return dial.NoLeader(name, detail)
}

// ctxStream is a server stream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

// lostLeader turns a handler's Unavailable answer that carries etcd's "no
// leader" (a require-leader request refused mid-call, see etcdError) into
// this member's NoLeader answer.
func (s *Server) lostLeader(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && !dial.IsNoLeader(err) &&
		strings.Contains(st.Message(), rpctypes.ErrNoLeader.Error()) {
		return s.noLeader("lost during the call: " + st.Message())
	}
	return err
}
