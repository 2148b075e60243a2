package reconciler_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/internal/eventually"
)

// TestFenceServesNothingUntilLifted: a fenced agent (lease lost, shared
// store) removes every sanboot target at once and builds none, even at a
// resync; lifted, it builds them again from its assignments. The disks stay.
func TestFenceServesNothingUntilLifted(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *reconciler.Config) { c.ResyncInterval = 200 * time.Millisecond })
	h.putImage("default", "golden", 1)
	nodes := []string{"node-01", "node-02"}
	for _, n := range nodes {
		h.assign(assignment("default", n, 1))
	}
	for _, n := range nodes {
		h.waitReady("default", n, 1)
	}
	if err := h.r.Fence(ctx, true); err != nil {
		t.Fatal(err)
	}
	if n := len(h.targets()); n != 0 {
		t.Fatalf("%d targets right after fencing, want 0", n)
	}
	h.passResyncs(3)
	if n := len(h.targets()); n != 0 {
		t.Fatalf("a fenced agent built %d targets", n)
	}
	if err := h.r.Fence(ctx, false); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "targets rebuilt after the fence is lifted", func() bool { return len(h.targets()) == len(nodes) })
	for _, n := range nodes {
		if _, ok := h.target(api.TargetIQN("", "default", n)); !ok {
			t.Errorf("target of %s not rebuilt", n)
		}
	}
	if c := h.store.Clones(); c != len(nodes) {
		t.Errorf("%d clones for %d nodes: fencing must keep the disks", c, len(nodes))
	}
}

// TestSharedStoreKeepsOtherAgentsImages: in a shared store (an RBD pool of
// a storage domain) an image placed on another agent is that agent's: this
// agent neither imports nor removes it; the image record's deletion does.
func TestSharedStoreKeepsOtherAgentsImages(t *testing.T) {
	h := newHarness(t)
	// The other agent of the domain made it in the shared store.
	if _, err := h.store.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "golden", SizeBytes: 1 << 20,
		Source: store.Source{Kind: store.SourceBlank}}); err != nil {
		t.Fatal(err)
	}
	h.putImage("default", "golden", 1, "agent-2")
	h.start(func(c *reconciler.Config) { c.SharedStore = true; c.ResyncInterval = 200 * time.Millisecond })
	h.passResyncs(3)
	if _, err := h.store.StatImage(ctx, "default", "golden"); err != nil {
		t.Fatalf("an image of another agent of the domain was removed from the shared store: %v", err)
	}
	if _, err := h.cli.Delete(ctx, api.ImageKey("default", "golden")); err != nil { // the record's deletion
		t.Fatal(err)
	}
	eventually.True(t, "the image removed once its record is deleted", func() bool {
		_, err := h.store.StatImage(ctx, "default", "golden")
		return errors.Is(err, store.ErrNotFound)
	})
}
