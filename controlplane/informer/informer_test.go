package informer_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/kv"
)

// recorder is a handler that keeps what it was told.
type recorder struct {
	mu      sync.Mutex
	updates []informer.Update
	nodes   map[state.Ref]bool // the nodes the store held at the last update
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{changed: make(chan struct{}, 1000)}
}

func (r *recorder) handle(u informer.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, u)
	r.nodes = map[state.Ref]bool{}
	for ref := range u.Store.Nodes {
		r.nodes[ref] = true
	}
	r.changed <- struct{}{}
}

func (r *recorder) has(ref state.Ref) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes[ref]
}

func start(t *testing.T) (*clientv3.Client, *informer.Informer, context.Context) {
	t.Helper()
	m := etcdtest.Start(t)
	cli := m.Client(t)
	log := cptest.Log(t)
	inf := informer.New(cli, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); inf.Run(ctx) }()
	t.Cleanup(func() {
		inf.Resume()
		cancel()
		<-done
	})
	return cli, inf, ctx
}

func putNode(t *testing.T, ctx context.Context, cli *clientv3.Client, name string) int64 {
	t.Helper()
	op, err := kv.PutOp(api.NodeKey("p", name), &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: "p", Name: name}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Do(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Put().Header.Revision
}

// Every handler reads the one store at each batch's revision; one added
// after the first list starts with a Resync update of what is there, and
// one removed is told nothing more.
func TestHandlersShareOneStore(t *testing.T) {
	cli, inf, ctx := start(t)
	early := newRecorder()
	removeEarly := inf.AddHandler(early.handle)
	rev := putNode(t, ctx, cli, "a")
	if err := inf.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if !early.has(state.Ref{Project: "p", Name: "a"}) {
		t.Fatal("the early handler was not told of node a")
	}

	late := newRecorder()
	removeLate := inf.AddHandler(late.handle)
	late.mu.Lock()
	first := late.updates[0]
	late.mu.Unlock()
	if !first.Resync || len(first.Changes) != 0 {
		t.Fatalf("a handler added after the first list starts with %+v, want a Resync update", first)
	}
	if !late.has(state.Ref{Project: "p", Name: "a"}) {
		t.Fatal("the late handler's first update does not show node a")
	}
	if first.Store != early.updates[0].Store {
		t.Fatal("the handlers were given different stores")
	}

	removeEarly()
	rev = putNode(t, ctx, cli, "b")
	if err := inf.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if early.has(state.Ref{Project: "p", Name: "b"}) {
		t.Fatal("a removed handler was told of node b")
	}
	if !late.has(state.Ref{Project: "p", Name: "b"}) {
		t.Fatal("the late handler was not told of node b")
	}
	removeLate()
	st := inf.RLock()
	n := len(st.Nodes)
	inf.RUnlock()
	if n != 2 {
		t.Fatalf("the store holds %d nodes, want 2", n)
	}
}

// WaitRevision returns once the store has seen a revision, also one made
// by a write outside api.Prefix (etcd reports progress); while the
// informer is paused it waits, and a cancelled wait says so.
func TestWaitRevision(t *testing.T) {
	cli, inf, ctx := start(t)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Put(ctx, "/elsewhere", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := inf.WaitRevision(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if got := inf.Revision(); got < resp.Header.Revision {
		t.Fatalf("revision %d after the wait, want at least %d", got, resp.Header.Revision)
	}

	inf.Pause()
	rev := putNode(t, ctx, cli, "held")
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	err = inf.WaitRevision(short, rev)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a wait on a paused informer returned %v, want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- inf.WaitRevision(ctx, rev) }()
	inf.Resume()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := inf.RLock()
	_, ok := st.Nodes[state.Ref{Project: "p", Name: "held"}]
	inf.RUnlock()
	if !ok {
		t.Fatal("the store does not hold the node written while paused")
	}
}

// Waits end with ErrStopped once Run has returned.
func TestWaitAfterStop(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	inf := informer.New(cli, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); inf.Run(ctx) }()
	if err := inf.WaitSynced(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if err := inf.WaitRevision(context.Background(), inf.Revision()+1000); !errors.Is(err, informer.ErrStopped) {
		t.Fatalf("WaitRevision after Run returned %v, want ErrStopped", err)
	}
}
