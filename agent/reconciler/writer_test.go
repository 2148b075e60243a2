package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/kv"
)

// One stale item in a batch costs neither the batch nor the other items.
func TestWriterBatchDropsOnlyStaleItems(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx := context.Background()
	w := newWriter(cli, slog.New(slog.NewTextHandler(t.Output(), nil)), 100)

	const n = 250 // three transactions
	revs := make([]int64, n)
	for i := range n {
		resp, err := cli.Put(ctx, api.AssignKey("a", "p", fmt.Sprintf("n%d", i)), "x")
		if err != nil {
			t.Fatal(err)
		}
		revs[i] = resp.Header.Revision
	}
	stale := map[int]bool{3: true, 120: true, 249: true}
	for i := range n {
		rev := revs[i]
		if stale[i] {
			rev-- // acted on an older revision
		}
		w.submit(statusItem("a", "p", fmt.Sprintf("n%d", i), rev, &sanbootv1.NodeStatus{Phase: api.PhaseReady, ObservedGeneration: int64(i)}))
	}
	w.flush(ctx)
	for i := range n {
		st := &sanbootv1.NodeStatus{}
		_, err := kv.Get(ctx, cli, api.NodeStatusKey("p", fmt.Sprintf("n%d", i), "a"), st)
		if stale[i] {
			if err == nil {
				t.Errorf("stale item %d written: %v", i, st)
			}
			continue
		}
		if err != nil || st.ObservedGeneration != int64(i) || st.UpdateTime == nil {
			t.Errorf("item %d: %v, %v", i, st, err)
		}
		if !w.covered(api.NodeStatusKey("p", fmt.Sprintf("n%d", i), "a"), revs[i]) {
			t.Errorf("item %d written but not covered", i)
		}
	}

	// The same content again is not written again.
	before, err := cli.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	w.submit(statusItem("a", "p", "n0", revs[0], &sanbootv1.NodeStatus{Phase: api.PhaseReady, ObservedGeneration: 0}))
	w.flush(ctx)
	after, err := cli.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Errorf("an unchanged status was written again (revision %d -> %d)", before.Header.Revision, after.Header.Revision)
	}
}

// A newer write of a key replaces the one waiting: the last word wins.
func TestWriterLastWordWins(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx := context.Background()
	w := newWriter(cli, slog.New(slog.NewTextHandler(t.Output(), nil)), 100)
	resp, err := cli.Put(ctx, api.AssignKey("a", "p", "n"), "x")
	if err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{api.PhaseProvisioning, api.PhaseReady} {
		w.submit(statusItem("a", "p", "n", resp.Header.Revision, &sanbootv1.NodeStatus{Phase: phase}))
	}
	w.flush(ctx)
	st := &sanbootv1.NodeStatus{}
	if _, err := kv.Get(ctx, cli, api.NodeStatusKey("p", "n", "a"), st); err != nil || st.Phase != api.PhaseReady {
		t.Fatalf("status %v, %v; want Ready", st, err)
	}
	// The key's record was deleted: the writer forgets it, and the same
	// content is written again.
	if _, err := cli.Delete(ctx, api.NodeStatusKey("p", "n", "a")); err != nil {
		t.Fatal(err)
	}
	w.forget(api.NodeStatusKey("p", "n", "a"))
	w.submit(statusItem("a", "p", "n", resp.Header.Revision, &sanbootv1.NodeStatus{Phase: api.PhaseReady}))
	w.flush(ctx)
	if _, err := kv.Get(ctx, cli, api.NodeStatusKey("p", "n", "a"), st); err != nil {
		t.Fatalf("not written again after forget: %v", err)
	}
}
