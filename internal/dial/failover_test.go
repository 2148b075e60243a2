package dial_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/dial"
)

// leaderless is a FAKE API server that answers every call NoLeader while
// noLeader is set (as a member cut off from its peers does, with the
// trailer that stops gRPC's retries), and otherwise says who answered.
type leaderless struct {
	sanbootv1.UnimplementedSanbootServer
	name     string
	noLeader atomic.Bool
	calls    atomic.Int32
}

func (f *leaderless) refuse(ctx context.Context) error {
	f.calls.Add(1)
	if !f.noLeader.Load() {
		return nil
	}
	grpc.SetTrailer(ctx, dial.NoRetryHere())
	return dial.NoLeader(f.name, "none for 3s")
}

func (f *leaderless) ListAgents(ctx context.Context, _ *sanbootv1.ListAgentsRequest) (*sanbootv1.ListAgentsResponse, error) {
	if err := f.refuse(ctx); err != nil {
		return nil, err
	}
	return &sanbootv1.ListAgentsResponse{Agents: []*sanbootv1.Agent{{State: "answered-by-" + f.name}}}, nil
}

func (f *leaderless) PutNodes(ctx context.Context, _ *sanbootv1.PutNodesRequest) (*sanbootv1.PutNodesResponse, error) {
	if err := f.refuse(ctx); err != nil {
		return nil, err
	}
	return &sanbootv1.PutNodesResponse{Results: []*sanbootv1.PutNodesResult{{Message: "written-by-" + f.name}}}, nil
}

func (f *leaderless) WatchNodes(_ *sanbootv1.WatchNodesRequest, ss grpc.ServerStreamingServer[sanbootv1.NodeEvent]) error {
	f.calls.Add(1)
	if f.noLeader.Load() {
		ss.SetTrailer(dial.NoRetryHere())
		return dial.NoLeader(f.name, "none for 3s")
	}
	return ss.Send(&sanbootv1.NodeEvent{Node: &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: "from-" + f.name}}})
}

// startLeaderless serves a leaderless fake per name on loopback.
func startLeaderless(t *testing.T, names ...string) ([]*leaderless, []string) {
	var fakes []*leaderless
	var addrs []string
	for _, name := range names {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f := &leaderless{name: name}
		gs := grpc.NewServer()
		sanbootv1.RegisterSanbootServer(gs, f)
		go gs.Serve(lis)
		t.Cleanup(gs.Stop)
		fakes = append(fakes, f)
		addrs = append(addrs, lis.Addr().String())
	}
	return fakes, addrs
}

// connect dials opts and returns an API client and a context bounding the
// test; both end with the test.
func connect(t *testing.T, opts dial.Options) (sanbootv1.SanbootClient, context.Context) {
	t.Helper()
	conn, err := dial.Dial(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return sanbootv1.NewSanbootClient(conn), ctx
}

// A member that answers NoLeader (alive, reachable, cut off from its
// peers) is left for the next endpoint: reads and writes are answered by
// another member, each asked of the leaderless one once (no retry there),
// and the caller hears which endpoint was left.
func TestLeavesMemberWithoutLeader(t *testing.T) {
	fakes, addrs := startLeaderless(t, "m1", "m2", "m3")
	var mu sync.Mutex
	var left []string
	api, ctx := connect(t, dial.Options{Endpoints: addrs, OnFailover: func(ep string, _ time.Time, err error) {
		if !dial.IsNoLeader(err) {
			t.Errorf("failover for %v, not a NoLeader answer", err)
		}
		mu.Lock()
		left = append(left, ep)
		mu.Unlock()
	}})
	// The connection settles on m1 while it has a leader.
	if resp, err := api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{}); err != nil || resp.Agents[0].State != "answered-by-m1" {
		t.Fatalf("before: %v, %v", resp, err)
	}
	fakes[0].noLeader.Store(true)
	before := fakes[0].calls.Load()
	resp, err := api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
	if err != nil || resp.Agents[0].State != "answered-by-m2" {
		t.Fatalf("read with m1 leaderless: %v, %v; want m2's answer", resp, err)
	}
	if n := fakes[0].calls.Load() - before; n != 1 {
		t.Errorf("m1 was asked %d times, want once (its answer stops gRPC's retries)", n)
	}
	mu.Lock()
	if !slices.Equal(left, addrs[:1]) {
		t.Errorf("left %v, want %v", left, addrs[:1])
	}
	mu.Unlock()
	// Writes go to m2 from now on: m1 is not asked again.
	put, err := api.PutNodes(ctx, &sanbootv1.PutNodesRequest{})
	if err != nil || put.Results[0].Message != "written-by-m2" {
		t.Fatalf("write after leaving m1: %v, %v", put, err)
	}
	if n := fakes[0].calls.Load() - before; n != 1 {
		t.Errorf("m1 asked again (%d calls) while left", n)
	}
	// A write answered NoLeader moves on too.
	fakes[1].noLeader.Store(true)
	if put, err = api.PutNodes(ctx, &sanbootv1.PutNodesRequest{}); err != nil || put.Results[0].Message != "written-by-m3" {
		t.Fatalf("write with m2 leaderless: %v, %v; want m3's answer", put, err)
	}
	if n := fakes[1].calls.Load(); n != 3 {
		t.Errorf("m2 saw %d calls, want 3 (the read and the write before, the refused one once)", n)
	}
}

// When no member has a leader (quorum lost) the caller hears so, after
// asking each once; the last endpoint is never left.
func TestNoMemberHasALeader(t *testing.T) {
	fakes, addrs := startLeaderless(t, "m1", "m2")
	for _, f := range fakes {
		f.noLeader.Store(true)
	}
	api, ctx := connect(t, dial.Options{Endpoints: addrs})
	_, err := api.PutNodes(ctx, &sanbootv1.PutNodesRequest{})
	if !dial.IsNoLeader(err) {
		t.Fatalf("got %v, want the NoLeader answer", err)
	}
	if a, b := fakes[0].calls.Load(), fakes[1].calls.Load(); a != 1 || b != 1 {
		t.Errorf("m1 asked %d times, m2 %d; want once each", a, b)
	}
}

// A stream that ends NoLeader leaves its member: the caller's next stream
// (a watch reconnecting) goes to another.
func TestStreamLeavesMemberWithoutLeader(t *testing.T) {
	fakes, addrs := startLeaderless(t, "m1", "m2")
	fakes[0].noLeader.Store(true)
	api, ctx := connect(t, dial.Options{Endpoints: addrs})
	watch := func() (*sanbootv1.NodeEvent, error) {
		s, err := api.WatchNodes(ctx, &sanbootv1.WatchNodesRequest{})
		if err != nil {
			return nil, err
		}
		return s.Recv()
	}
	if _, err := watch(); !dial.IsNoLeader(err) {
		t.Fatalf("first watch: %v, want m1's NoLeader", err)
	}
	ev, err := watch()
	if err != nil || ev.Node.Metadata.Name != "from-m2" {
		t.Fatalf("watch again: %v, %v; want m2's", ev, err)
	}
}

// Errors that are not NoLeader are not classed so.
func TestIsNoLeader(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{dial.NoLeader("cp1", "x"), true},
		{nil, false},
		{context.Canceled, false},
	} {
		if got := dial.IsNoLeader(tc.err); got != tc.want {
			t.Errorf("IsNoLeader(%v) = %v", tc.err, got)
		}
	}
}

// Calls made at once to a member without a leader all end up answered
// by another; the endpoint is left (and said) once.
func TestConcurrentCallsLeaveOnce(t *testing.T) {
	fakes, addrs := startLeaderless(t, "m1", "m2", "m3")
	var failovers atomic.Int32
	api, ctx := connect(t, dial.Options{Endpoints: addrs, OnFailover: func(string, time.Time, error) { failovers.Add(1) }})
	if _, err := api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{}); err != nil {
		t.Fatal(err)
	}
	fakes[0].noLeader.Store(true)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, err := api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
			if err != nil || resp.Agents[0].State == "answered-by-m1" {
				t.Errorf("%v, %v", resp, err)
			}
		})
	}
	wg.Wait()
	if n := failovers.Load(); n != 1 {
		t.Errorf("m1 left %d times, want once", n)
	}
}

// Endpoints an earlier connection left (sanbootctl's cache) are not used
// until their time is up: the first call goes to the next member, the
// left one never asked; when every endpoint was left, all are used.
func TestLeftEndpointsOfAnEarlierConnection(t *testing.T) {
	fakes, addrs := startLeaderless(t, "m1", "m2")
	api, ctx := connect(t, dial.Options{Endpoints: addrs, Left: map[string]time.Time{addrs[0]: time.Now().Add(time.Hour)}})
	if resp, err := api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{}); err != nil || resp.Agents[0].State != "answered-by-m2" {
		t.Fatalf("%v, %v; want m2's answer", resp, err)
	}
	if n := fakes[0].calls.Load(); n != 0 {
		t.Errorf("m1, left by an earlier connection, was asked %d times", n)
	}
	all := map[string]time.Time{addrs[0]: time.Now().Add(time.Hour), addrs[1]: time.Now().Add(time.Hour)}
	api, ctx = connect(t, dial.Options{Endpoints: addrs, Left: all})
	if resp, err := api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{}); err != nil || resp.Agents[0].State != "answered-by-m1" {
		t.Fatalf("every endpoint left: %v, %v; want m1's answer (the first)", resp, err)
	}
}
