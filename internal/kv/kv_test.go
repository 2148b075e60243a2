package kv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

func TestCASOneOfTwoWritersWins(t *testing.T) {
	m := etcdtest.Start(t)
	c := m.Client(t)
	ctx := context.Background()
	const key = "/test/cas"
	rev, err := kv.CAS(ctx, c, key, 0, &sanbootv1.Placement{Agent: "a"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := kv.CAS(ctx, c, key, 0, &sanbootv1.Placement{Agent: "a"}); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("second create: got %v, want ErrConflict", err)
	}
	// Two writers read the same revision; exactly one may win.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = kv.CAS(ctx, c, key, rev, &sanbootv1.Placement{Agent: []string{"x", "y"}[i]})
		}()
	}
	wg.Wait()
	wins, conflicts := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, kv.ErrConflict):
			conflicts++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if wins != 1 || conflicts != 1 {
		t.Fatalf("wins=%d conflicts=%d, want 1 and 1", wins, conflicts)
	}
	var got sanbootv1.Placement
	if _, err := kv.Get(ctx, c, key, &got); err != nil {
		t.Fatal(err)
	}
	if got.Agent != "x" && got.Agent != "y" {
		t.Fatalf("agent = %q", got.Agent)
	}
	if _, err := kv.Get(ctx, c, "/test/missing", &got); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("missing: got %v, want ErrNotFound", err)
	}
}

// mirror keeps what Reflect delivered.
type mirror struct {
	mu      sync.Mutex
	keys    map[string]string
	resyncs int
	rev     int64 // the highest Batch.Revision
	// lastEvent is the mod revision of the last event of each batch with
	// events, and revs those batches' Revision.
	lastEvent, revs []int64
}

func (m *mirror) handle(b kv.Batch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.Resync {
		m.resyncs++
	}
	m.rev = max(m.rev, b.Revision)
	if n := len(b.Events); n > 0 && !b.Resync {
		m.lastEvent = append(m.lastEvent, b.Events[n-1].ModRevision)
		m.revs = append(m.revs, b.Revision)
	}
	for _, e := range b.Events {
		if e.Deleted {
			delete(m.keys, e.Key)
		} else {
			m.keys[e.Key] = string(e.Value)
		}
	}
}

func (m *mirror) waitFor(t *testing.T, want map[string]string) {
	t.Helper()
	got := 0
	eventually.True(t, fmt.Sprintf("the mirror to hold %v", want), func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		got = len(m.keys)
		ok := got == len(want)
		for k, v := range want {
			ok = ok && m.keys[k] == v
		}
		return ok
	}, eventually.Seen(func() string { return fmt.Sprint(got, " keys") }))
}

func TestReflectResumesAfterRestart(t *testing.T) {
	m := etcdtest.Start(t)
	c := m.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put(t, c, "/p/a", "1")
	mir := startMirror(ctx, t, c, "/p/")
	mir.waitFor(t, map[string]string{"/p/a": "1"})

	// Restart the member: the watch must resume from where it was.
	m.Restart()
	put(t, c, "/p/b", "2")
	if _, err := c.Delete(ctx, "/p/a"); err != nil {
		t.Fatal(err)
	}
	mir.waitFor(t, map[string]string{"/p/b": "2"})
}

func TestReflectRelistsAfterCompaction(t *testing.T) {
	m := etcdtest.Start(t)
	writer := m.Client(t)
	// The watcher reaches etcd through a proxy that the test can cut.
	proxy := etcdtest.NewProxy(t, strings.TrimPrefix(m.Endpoints[0], "http://"))
	watcher, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + proxy.Addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put(t, writer, "/p/a", "1")
	put(t, writer, "/p/b", "2")
	mir := startMirror(ctx, t, watcher, "/p/")
	mir.waitFor(t, map[string]string{"/p/a": "1", "/p/b": "2"})

	// While the watcher is cut off: a delete it will never see as an event,
	// a put, and a compaction past both.
	proxy.Pause()
	if _, err := writer.Delete(ctx, "/p/a"); err != nil {
		t.Fatal(err)
	}
	put(t, writer, "/p/c", "3")
	m.Compact(t, writer)
	proxy.Resume()

	mir.waitFor(t, map[string]string{"/p/b": "2", "/p/c": "3"})
	mir.mu.Lock()
	defer mir.mu.Unlock()
	if mir.resyncs < 2 {
		t.Fatalf("resyncs = %d: the watcher should have listed again after the compaction", mir.resyncs)
	}
}

func put(t *testing.T, c *clientv3.Client, k, v string) {
	t.Helper()
	if _, err := c.Put(context.Background(), k, v); err != nil {
		t.Fatal(err)
	}
}

func startMirror(ctx context.Context, t *testing.T, c *clientv3.Client, prefix string) *mirror {
	mir := &mirror{keys: map[string]string{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan struct{})
	go func() { defer close(done); kv.Reflect(ctx, c, prefix, log, mir.handle) }()
	t.Cleanup(func() { <-done })
	return mir
}

// A watch batch claims no revision beyond its last event, and a progress
// request moves a mirror to a revision no event under its prefix reached
// (a write elsewhere).
func TestReflectRevisions(t *testing.T) {
	m := etcdtest.Start(t)
	c := m.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mir := startMirror(ctx, t, c, "/p/")
	mir.waitFor(t, map[string]string{})
	want := map[string]string{}
	for i := range 50 {
		k := fmt.Sprintf("/p/%02d", i)
		put(t, c, k, "v")
		want[k] = "v"
	}
	mir.waitFor(t, want)
	resp, err := c.Put(ctx, "/elsewhere", "x")
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := resp.Header.Revision
	var rev int64
	eventually.True(t, fmt.Sprintf("the mirror at revision %d after a progress request", elsewhere), func() bool {
		if err := kv.RequestProgress(ctx, c); err != nil {
			t.Fatal(err)
		}
		mir.mu.Lock()
		defer mir.mu.Unlock()
		rev = mir.rev
		return rev >= elsewhere
	}, eventually.Seen(func() string { return fmt.Sprint("revision ", rev) }))
	mir.mu.Lock()
	defer mir.mu.Unlock()
	for i, last := range mir.lastEvent {
		if mir.revs[i] != last {
			t.Fatalf("batch %d: Revision %d, last event at %d", i, mir.revs[i], last)
		}
	}
}
