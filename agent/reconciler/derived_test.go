package reconciler_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/store"
	fakestore "github.com/sanboot/sanboot/agent/store/fake"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

// putDerived writes an image made from a node's disk (snapshot) or from
// another image (copy), as the API server resolves it.
func (h *harness) putDerived(name string, gen int64, src *sanbootv1.ImageSource, parent string, agents ...string) {
	h.t.Helper()
	h.put(api.ImageKey("default", name), &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: name, Generation: gen},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 1 << 30, Agents: agents, Source: src, Parent: parent},
	})
}

func snapshotOf(node string) *sanbootv1.ImageSource {
	return &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: node}}}
}

func copyOf(image string) *sanbootv1.ImageSource {
	return &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Copy{Copy: &sanbootv1.CopySource{Image: image}}}
}

func (h *harness) replica(image string) (*sanbootv1.ImageReplica, bool) {
	h.t.Helper()
	rep := &sanbootv1.ImageReplica{}
	_, err := kv.Get(ctx, h.cli, api.ReplicaKey("default", image, agent), rep)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return rep, true
}

func (h *harness) waitReplica(image, what string, cond func(*sanbootv1.ImageReplica) bool) *sanbootv1.ImageReplica {
	h.t.Helper()
	var last *sanbootv1.ImageReplica
	eventually.True(h.t, "replica of "+image+" "+what, func() bool {
		rep, ok := h.replica(image)
		last = rep
		return ok && cond(rep)
	})
	return last
}

func phaseIs(phase, msg string) func(*sanbootv1.ImageReplica) bool {
	return func(r *sanbootv1.ImageReplica) bool { return r.Phase == phase && strings.Contains(r.Message, msg) }
}

func nodeOn(image, node string, gen int64) *sanbootv1.Assignment {
	a := assignment("default", node, gen)
	a.Spec.Image = image
	return a
}

// A snapshot becomes a Ready replica, a node is provisioned from it at
// once, and deleting the snapshotted node leaves the snapshot alone.
func TestSnapshotBecomesReadyAndProvisions(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	a := nodeOn("golden", "node-01", 1)
	h.assign(a)
	h.waitReady("default", "node-01", 1)

	h.putDerived("snap", 1, snapshotOf("node-01"), "golden", agent)
	rep := h.waitReplica("snap", "Ready", phaseIs(api.ReplicaReady, ""))
	if rep.SizeBytes != 1<<30 || rep.ObservedGeneration != 1 {
		t.Errorf("replica = %v", rep)
	}
	im, err := h.store.StatImage(ctx, "default", "snap")
	if err != nil || im.Source != (store.Source{Kind: store.SourceSnapshot, Node: "node-01"}) {
		t.Fatalf("store image = %+v, %v", im, err)
	}

	h.assign(nodeOn("snap", "node-02", 1))
	h.waitReady("default", "node-02", 1)
	if d, err := h.store.StatDisk(ctx, "default", "node-02"); err != nil || d.Image != "snap" {
		t.Fatalf("disk of node-02 = %+v, %v; want a clone of snap", d, err)
	}

	a.Deleting = true
	h.assign(a)
	h.waitStatus("default", "node-01", "Deleted", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseDeleted })
	if _, err := h.store.StatImage(ctx, "default", "snap"); err != nil {
		t.Errorf("snapshot gone with its node: %v", err)
	}
	if rep, ok := h.replica("snap"); !ok || rep.Phase != api.ReplicaReady {
		t.Errorf("replica after the node's deletion = %v", rep)
	}
}

// A snapshot asked for while the node's disk is still being cloned waits
// for it; one of a node that has no disk here fails and says why.
func TestSnapshotWaitsForTheDisk(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(o *fakestore.Options) {
		o.BeforeClone = holdUntil(release)
	})
	h.start()
	h.putImage("default", "golden", 1)
	h.assign(nodeOn("golden", "node-01", 1))
	h.putDerived("snap", 1, snapshotOf("node-01"), "golden", agent)
	h.waitReplica("snap", "Pending", phaseIs(api.ReplicaPending, `waiting for the disk of node "node-01"`))
	close(release)
	h.waitReplica("snap", "Ready", phaseIs(api.ReplicaReady, ""))

	h.putDerived("orphan", 1, snapshotOf("node-99"), "golden", agent)
	h.waitReplica("orphan", "Failed", phaseIs(api.ReplicaFailed, `node "node-99" has no disk on agent "agent-1"`))
}

// A copy is made from this agent's own replica of its source: it waits for
// it, and says why when the source is missing or not meant for this agent.
func TestCopyWaitsForItsSource(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putDerived("cp", 1, copyOf("src"), "")
	h.waitReplica("cp", "Failed", phaseIs(api.ReplicaFailed, `source image "src" does not exist in project "default"`))

	h.putImage("default", "src", 1, "agent-2")
	h.putDerived("cp", 2, copyOf("src"), "")
	h.waitReplica("cp", "Failed", phaseIs(api.ReplicaFailed, `source image "src" is not replicated to agent "agent-1"`))

	h.putImage("default", "src", 2) // every agent
	rep := h.waitReplica("cp", "Ready", phaseIs(api.ReplicaReady, ""))
	if rep.ObservedGeneration != 2 {
		t.Errorf("replica = %v", rep)
	}
	im, err := h.store.StatImage(ctx, "default", "cp")
	if err != nil || im.Source != (store.Source{Kind: store.SourceCopy, Image: "src"}) {
		t.Fatalf("store image = %+v, %v", im, err)
	}
	// The copy is a file of its own: removing the source leaves it.
	if _, err := h.cli.Delete(ctx, api.ImageKey("default", "src")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "source removed from the store", func() bool {
		_, err := h.store.StatImage(ctx, "default", "src")
		return errors.Is(err, store.ErrNotFound)
	})
	if rep, ok := h.replica("cp"); !ok || rep.Phase != api.ReplicaReady {
		t.Errorf("copy after its source's removal = %v", rep)
	}
}

// gatedStore is a FAKE store (fakestore underneath) that holds every
// import of image gated until released, and records whether a node's disk
// was ever deleted while that image was not in the store.
type gatedStore struct {
	*fakestore.Store
	gated   string
	release chan struct{}

	mu        sync.Mutex
	waiters   int
	diskGone  bool
	violation string
}

func (g *gatedStore) EnsureImage(ctx context.Context, spec store.ImageSpec) (store.Image, error) {
	if spec.Name == g.gated {
		g.mu.Lock()
		g.waiters++
		g.mu.Unlock()
		select {
		case <-g.release:
		case <-ctx.Done():
			return store.Image{}, ctx.Err()
		}
	}
	return g.Store.EnsureImage(ctx, spec)
}

func (g *gatedStore) DeleteDisk(ctx context.Context, project, node string) error {
	_, err := g.Store.StatImage(ctx, project, g.gated)
	g.mu.Lock()
	if err != nil {
		g.violation = "the disk of " + node + " was deleted before image " + g.gated + " was made: " + err.Error()
	}
	g.diskGone = true
	g.mu.Unlock()
	return g.Store.DeleteDisk(ctx, project, node)
}

func (g *gatedStore) state() (waiters int, diskGone bool, violation string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiters, g.diskGone, g.violation
}

// A snapshot asked for before its node's deletion is taken before the
// disk goes, even when the node's teardown comes first.
func TestDeletionTakesPendingSnapshotsFirst(t *testing.T) {
	h := newHarness(t)
	g := &gatedStore{Store: h.store, gated: "snap", release: make(chan struct{})}
	h.start(func(c *reconciler.Config) { c.Store = g })
	h.putImage("default", "golden", 1)
	a := nodeOn("golden", "node-01", 1)
	h.assign(a)
	h.waitReady("default", "node-01", 1)

	h.putDerived("snap", 1, snapshotOf("node-01"), "golden", agent)
	eventually.True(t, "the snapshot's import is held", func() bool { n, _, _ := g.state(); return n == 1 })
	a.Deleting = true
	h.assign(a)
	// The teardown either waits to take the snapshot itself, or (wrongly)
	// deletes the disk.
	eventually.True(t, "the teardown reaches the snapshot or the disk", func() bool { n, gone, _ := g.state(); return n == 2 || gone })
	close(g.release)
	h.waitStatus("default", "node-01", "Deleted", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseDeleted })
	if _, _, v := g.state(); v != "" {
		t.Fatal(v)
	}
	h.waitReplica("snap", "Ready", phaseIs(api.ReplicaReady, ""))
}

// A node deleted with spec.keepDisk, whose disk the API server turned into
// a snapshot image with the deletion: the agent deletes the disk, but only
// after that image is made, and says so.
func TestKeepDiskDeletesTheDiskAfterItsImage(t *testing.T) {
	h := newHarness(t)
	g := &gatedStore{Store: h.store, gated: "node-01-disk-20260101-000000", release: make(chan struct{})}
	h.start(func(c *reconciler.Config) { c.Store = g })
	h.putImage("default", "golden", 1)
	a := nodeOn("golden", "node-01", 1)
	h.assign(a)
	h.waitReady("default", "node-01", 1)

	h.putDerived(g.gated, 1, snapshotOf("node-01"), "golden", agent)
	a.Spec.KeepDisk = true
	a.Generation = 2
	a.Deleting = true
	h.assign(a)
	eventually.True(t, "the teardown reaches the snapshot or the disk", func() bool { n, gone, _ := g.state(); return n == 2 || gone })
	if _, gone, _ := g.state(); gone {
		t.Fatal("the disk was deleted while its image was still being made")
	}
	close(g.release)
	st := h.waitStatus("default", "node-01", "Deleted", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseDeleted })
	if _, _, v := g.state(); v != "" {
		t.Fatal(v)
	}
	if _, err := h.store.StatDisk(ctx, "default", "node-01"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("disk not deleted after its image was made: %v", err)
	}
	if !strings.Contains(st.Message, "kept as a snapshot image") {
		t.Errorf("message %q", st.Message)
	}
	h.waitReplica(g.gated, "Ready", phaseIs(api.ReplicaReady, ""))
}

// An image deleted and created again under its name is another image (a
// new uid): the agent replaces its stored copy rather than report the old
// bytes as the new image.
func TestRecreatedImageReplacesTheStoredCopy(t *testing.T) {
	h := newHarness(t)
	h.start()
	put := func(uid string) {
		h.put(api.ImageKey("default", "nightly"), &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "nightly", Generation: 1, Uid: uid},
			Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 30,
				Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}}},
		})
	}
	storedUID := func() string {
		im, err := h.store.StatImage(ctx, "default", "nightly")
		if err != nil {
			return "(none: " + err.Error() + ")"
		}
		return im.Source.UID
	}
	put("uid-first")
	eventually.True(t, "the first image stored", func() bool { return storedUID() == "uid-first" })
	// The delete and the re-create reach the agent as one change.
	put("uid-second")
	eventually.True(t, "the stored copy replaced", func() bool { return storedUID() == "uid-second" })
	h.waitReplica("nightly", "Ready", phaseIs(api.ReplicaReady, ""))
}
