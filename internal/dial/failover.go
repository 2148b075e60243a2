package dial

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// Leaving a member without an etcd leader. pick_first stays on a
// connection that works, and a member cut off from its peers still answers
// (NoLeader): its clients would call it again and again. So a call answered
// NoLeader makes the connection leave that member's endpoint for LeaveFor:
// the endpoint is taken out of the addresses gRPC is given, pick_first
// connects to the next one, and the call is made again there. The last
// endpoint left is never taken out (when no member has a leader, the
// caller hears so). After LeaveFor the endpoint is given back, in its
// place; pick_first stays on the connection it uses then.
const LeaveFor = 30 * time.Second

// endpointSet is the addresses of one connection: every endpoint it knows
// (configured, then learned), less those it left.
type endpointSet struct {
	r          *manual.Resolver
	tls        bool
	onFailover func(endpoint string, until time.Time, err error)

	mu  sync.Mutex
	all []string
	// left: endpoints left, until when.
	left map[string]time.Time
	// byRemote: the endpoint each connection was dialled for, by its
	// remote address (what a call's peer says).
	byRemote map[string]string
}

func newEndpointSet(r *manual.Resolver, opts Options, initial []string) *endpointSet {
	s := &endpointSet{r: r, tls: opts.TLS != nil, onFailover: opts.OnFailover, all: initial,
		left: map[string]time.Time{}, byRemote: map[string]string{}}
	now := time.Now()
	for e, until := range opts.Left {
		if now.Before(until) {
			s.left[e] = until
			time.AfterFunc(until.Sub(now), s.refresh) // back in use then
		}
	}
	r.InitialState(s.stateLocked(now))
	return s
}

// set replaces the endpoints (a discovery found others).
func (s *endpointSet) set(endpoints []string) {
	s.mu.Lock()
	s.all = slices.Clone(endpoints)
	st := s.stateLocked(time.Now())
	s.mu.Unlock()
	s.r.UpdateState(st)
}

// stateLocked is the resolver state: the endpoints not left, in order;
// all of them if every one was left.
func (s *endpointSet) stateLocked(now time.Time) resolver.State {
	var use []string
	for _, e := range s.all {
		if until, ok := s.left[e]; ok && now.Before(until) {
			continue
		}
		delete(s.left, e)
		use = append(use, e)
	}
	if len(use) == 0 {
		use = s.all
	}
	return resolver.State{Addresses: addresses(use, s.tls)}
}

// leave takes endpoint out for LeaveFor, unless it is the last one in use
// (false). An endpoint already left (calls made at once were answered
// NoLeader) is left once, and said once.
func (s *endpointSet) leave(endpoint string, err error) bool {
	s.mu.Lock()
	now := time.Now()
	if until, ok := s.left[endpoint]; ok && now.Before(until) {
		s.mu.Unlock()
		return true
	}
	if !slices.Contains(s.all, endpoint) || len(s.stateLocked(now).Addresses) < 2 {
		s.mu.Unlock()
		return false
	}
	until := now.Add(LeaveFor)
	s.left[endpoint] = until
	st := s.stateLocked(now)
	s.mu.Unlock()
	if s.onFailover != nil {
		s.onFailover(endpoint, until, err)
	}
	s.r.UpdateState(st)
	time.AfterFunc(LeaveFor, s.refresh)
	return true
}

// refresh gives the resolver the endpoints again (those whose time is up
// come back).
func (s *endpointSet) refresh() {
	s.mu.Lock()
	st := s.stateLocked(time.Now())
	s.mu.Unlock()
	s.r.UpdateState(st)
}

// dial connects to endpoint and remembers it by the connection's remote
// address (grpc.WithContextDialer).
func (s *endpointSet) dial(ctx context.Context, endpoint string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.byRemote[c.RemoteAddr().String()] = endpoint
	s.mu.Unlock()
	return c, nil
}

// endpointOf is the endpoint a call reached (its peer), "" if unknown.
func (s *endpointSet) endpointOf(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byRemote[p.Addr.String()]
}

// unary makes a call answered NoLeader again on another endpoint, as long
// as there is one to leave for (and at most maxFailovers times).
func (s *endpointSet) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	for attempt := 1; ; attempt++ {
		var p peer.Peer
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
		if !IsNoLeader(err) || ctx.Err() != nil || attempt > maxFailovers || !s.leave(s.endpointOf(&p), err) {
			return err
		}
	}
}

// maxFailovers bounds the endpoints one call leaves (a cluster has 3 or 5
// members, each perhaps at two addresses).
const maxFailovers = 10

// stream leaves the endpoint of a stream that ends NoLeader; its caller
// opens it again (a watch reconnects), on another endpoint.
func (s *endpointSet) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p := new(peer.Peer)
	cs, err := streamer(ctx, desc, cc, method, append(opts, grpc.Peer(p))...)
	if err != nil {
		if IsNoLeader(err) {
			s.leave(s.endpointOf(p), err)
		}
		return nil, err
	}
	return &leavingStream{ClientStream: cs, set: s, peer: p}, nil
}

type leavingStream struct {
	grpc.ClientStream
	set  *endpointSet
	peer *peer.Peer
}

func (l *leavingStream) RecvMsg(m any) error {
	err := l.ClientStream.RecvMsg(m)
	if IsNoLeader(err) {
		l.set.leave(l.set.endpointOf(l.peer), err)
	}
	return err
}
