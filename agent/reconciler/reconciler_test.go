package reconciler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/store"
	fakestore "github.com/sanboot/sanboot/agent/store/fake"
	"github.com/sanboot/sanboot/agent/target"
	faketarget "github.com/sanboot/sanboot/agent/target/fake"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

const (
	agent = "agent-1"
	wait  = 60 * time.Second // generous: a loaded 2-core machine
)

var ctx = context.Background()

type harness struct {
	t      *testing.T
	cli    *clientv3.Client
	store  *fakestore.Store
	driver *faketarget.Driver
	r      *reconciler.Reconciler
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T, storeOpts ...func(*fakestore.Options)) *harness {
	t.Helper()
	m := etcdtest.Start(t)
	opts := fakestore.Options{Root: "/var/lib/sanboot", CapacityBytes: 1 << 40}
	for _, o := range storeOpts {
		o(&opts)
	}
	s, err := fakestore.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, cli: m.Client(t), store: s, driver: faketarget.New()}
}

// holdUntil is a fake store hook (BeforeClone) that holds each call
// until release is closed or the call's context ends.
func holdUntil(release <-chan struct{}) func(ctx context.Context, project, node string) error {
	return func(ctx context.Context, _, _ string) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// slowWhile is a fake store hook that, while slow is set, takes d (or
// until the call's context ends) and counts the slow calls in calls, when
// given.
func slowWhile(slow *atomic.Bool, d time.Duration, calls *atomic.Int32) func(ctx context.Context, project, name string) {
	return func(ctx context.Context, _, _ string) {
		if !slow.Load() {
			return
		}
		if calls != nil {
			calls.Add(1)
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}

// start runs a reconciler over the harness's store and driver (which, like
// a host's disks and kernel, outlive the agent process).
func (h *harness) start(mods ...func(*reconciler.Config)) {
	h.t.Helper()
	cfg := reconciler.Config{
		Agent: agent, Client: h.cli, Store: h.store, Driver: h.driver,
		Portals: []string{"127.0.0.1:3260"}, AdvertisePortals: []string{"10.0.2.2:3260"},
		Workers: 4, RetryBase: 50 * time.Millisecond, RetryMax: time.Second,
		Log: slog.New(slog.NewTextHandler(h.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mods {
		m(&cfg)
	}
	r, err := reconciler.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	c, cancel := context.WithCancel(ctx)
	h.r, h.cancel, h.done = r, cancel, make(chan struct{})
	go func() { defer close(h.done); _ = r.Run(c) }()
	h.t.Cleanup(h.stop)
	select {
	case <-r.Synced():
	case <-time.After(wait):
		h.t.Fatalf("reconciler not synced after %v", wait)
	}
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

func (h *harness) putImage(project, name string, gen int64, agents ...string) {
	h.t.Helper()
	im := &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name, Generation: gen},
		Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 30, Agents: agents,
			Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}}},
	}
	h.put(api.ImageKey(project, name), im)
}

// assignment is what the scheduler writes for a node.
func assignment(project, node string, gen int64) *sanbootv1.Assignment {
	return &sanbootv1.Assignment{
		Project: project, Node: node, Generation: gen, Uid: "uid-" + node,
		Spec:         &sanbootv1.NodeSpec{Image: "golden", Macs: []string{"52:54:00:12:34:56"}},
		InitiatorIqn: api.DefaultInitiatorIQN(project, node),
		TargetIqn:    api.TargetIQN("", project, node),
	}
}

func (h *harness) assign(a *sanbootv1.Assignment) int64 {
	h.t.Helper()
	return h.put(api.AssignKey(agent, a.Project, a.Node), a)
}

// put writes a record as the API or the scheduler would, and returns its
// mod_revision.
func (h *harness) put(key string, msg proto.Message) int64 {
	h.t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := h.cli.Put(ctx, key, string(b))
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (h *harness) status(project, node string) (*sanbootv1.NodeStatus, bool) {
	h.t.Helper()
	st := &sanbootv1.NodeStatus{}
	_, err := kv.Get(ctx, h.cli, api.NodeStatusKey(project, node, agent), st)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return st, true
}

func (h *harness) waitStatus(project, node, what string, cond func(*sanbootv1.NodeStatus) bool) *sanbootv1.NodeStatus {
	h.t.Helper()
	var st *sanbootv1.NodeStatus
	eventually.True(h.t, project+"/"+node+" status "+what, func() bool {
		var ok bool
		st, ok = h.status(project, node)
		return ok && cond(st)
	}, eventually.Seen(func() string { return st.String() }))
	return st
}

func (h *harness) waitReady(project, node string, gen int64) *sanbootv1.NodeStatus {
	h.t.Helper()
	return h.waitStatus(project, node, fmt.Sprintf("Ready at generation %d", gen), func(st *sanbootv1.NodeStatus) bool {
		return st.Phase == api.PhaseReady && st.ObservedGeneration == gen
	})
}

// passResyncs waits for n more full resyncs: what proves that time passed
// in a test asserting that nothing happened (nothing may happen at any
// time, so no sleep is long enough, and no deadline is asserted).
func (h *harness) passResyncs(n int64) {
	h.t.Helper()
	h.r.Resync()
	want := h.r.Resyncs() + n
	eventually.True(h.t, fmt.Sprintf("%d more resyncs", n), func() bool { return h.r.Resyncs() >= want },
		eventually.Seen(func() string { return fmt.Sprint(h.r.Resyncs(), " resyncs") }))
}

func (h *harness) targets() []target.Target {
	h.t.Helper()
	l, err := h.driver.List(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return l
}

func (h *harness) target(iqn string) (target.Target, bool) {
	h.t.Helper()
	for _, t := range h.targets() {
		if t.IQN == iqn {
			return t, true
		}
	}
	return target.Target{}, false
}

func TestAssignmentBecomesReady(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	st := h.waitReady("default", "node-01", 1)
	iqn := api.TargetIQN("", "default", "node-01")
	if st.Agent != agent || st.TargetIqn != iqn || !slices.Equal(st.Portals, []string{"10.0.2.2:3260"}) ||
		st.Lun != faketarget.LUN || st.CloneMode != string(store.CloneFake) || st.UpdateTime == nil {
		t.Errorf("status = %v", st)
	}
	tg, ok := h.target(iqn)
	if !ok {
		t.Fatalf("no target %s in %v", iqn, h.targets())
	}
	disk, err := h.store.StatDisk(ctx, "default", "node-01")
	if err != nil {
		t.Fatal(err)
	}
	want := target.Target{IQN: iqn, BackingPath: disk.Path, SizeBytes: 1 << 30,
		Initiators: []string{api.DefaultInitiatorIQN("default", "node-01")},
		Portals:    []string{"127.0.0.1:3260"}, Serial: target.Serial("default", "node-01")}
	if !target.SameConfig(tg, want) || disk.Path != "/var/lib/sanboot/disks/default/node-01.raw" {
		t.Errorf("target = %v\nwant     %v", tg, want)
	}
	rep := &sanbootv1.ImageReplica{}
	if _, err := kv.Get(ctx, h.cli, api.ReplicaKey("default", "golden", agent), rep); err != nil {
		t.Fatal(err)
	}
	if rep.Phase != api.ReplicaReady || rep.Agent != agent || rep.ObservedGeneration != 1 || rep.SizeBytes != 1<<30 {
		t.Errorf("replica = %v", rep)
	}
}

func TestSpecChangeIsObserved(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	a := assignment("default", "node-01", 1)
	h.assign(a)
	h.waitReady("default", "node-01", 1)

	a.Generation = 2
	a.InitiatorIqn = "iqn.2026-11.org.example:node-01"
	a.Spec.InitiatorIqn = a.InitiatorIqn
	h.assign(a)
	h.waitReady("default", "node-01", 2)
	tg, _ := h.target(a.TargetIqn)
	if !slices.Equal(tg.Initiators, []string{a.InitiatorIqn}) {
		t.Errorf("ACL = %v, want [%s]", tg.Initiators, a.InitiatorIqn)
	}
	if n := h.store.Clones(); n != 1 {
		t.Errorf("%d clones; a spec change must not clone the disk again", n)
	}
}

func TestDeletingAssignment(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepDisk=%v", keep), func(t *testing.T) {
			h := newHarness(t)
			h.start()
			h.putImage("default", "golden", 1)
			a := assignment("default", "node-01", 1)
			a.Spec.KeepDisk = keep
			h.assign(a)
			h.waitReady("default", "node-01", 1)

			a.Deleting = true
			h.assign(a)
			st := h.waitStatus("default", "node-01", "Deleted", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseDeleted })
			if _, ok := h.target(a.TargetIqn); ok {
				t.Errorf("target still served after Deleted")
			}
			_, err := h.store.StatDisk(ctx, "default", "node-01")
			if keep {
				if err != nil {
					t.Errorf("keepDisk: disk gone: %v", err)
				}
				if !strings.Contains(st.Message, "kept at /var/lib/sanboot/disks/default/node-01.raw") {
					t.Errorf("keepDisk: message %q does not say where the disk is kept", st.Message)
				}
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("disk not deleted: %v", err)
			}
		})
	}
}

// A status about an older revision of the assignment cannot overwrite the
// status of the newer one.
func TestStaleRevisionCannotOverwriteStatus(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	a := assignment("default", "node-01", 1)
	rev1 := h.assign(a)
	h.waitReady("default", "node-01", 1)
	a.Generation = 2
	h.assign(a)
	h.waitReady("default", "node-01", 2)

	stale := &sanbootv1.NodeStatus{Phase: api.PhaseFailed, Message: "stale", Agent: agent, ObservedGeneration: 1}
	err := reconciler.PutNodeStatus(ctx, h.cli, agent, "default", "node-01", rev1, stale)
	if !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("stale write: %v, want ErrConflict", err)
	}
	if st, _ := h.status("default", "node-01"); st.Phase != api.PhaseReady || st.ObservedGeneration != 2 {
		t.Errorf("status after a stale write = %v", st)
	}
	// Another agent's (or a moved) assignment guards nothing of ours.
	if err := reconciler.PutNodeStatus(ctx, h.cli, "agent-2", "default", "node-01", rev1, stale); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("write by an agent without the assignment: %v, want ErrConflict", err)
	}
}

// A reboot wipes the targets (LIO keeps them in memory): the periodic
// resync builds them again.
func TestResyncRebuildsTargetsAfterReboot(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *reconciler.Config) { c.ResyncInterval = 200 * time.Millisecond })
	h.putImage("default", "golden", 1)
	nodes := []string{"node-01", "node-02", "node-03"}
	for _, n := range nodes {
		h.assign(assignment("default", n, 1))
	}
	for _, n := range nodes {
		h.waitReady("default", n, 1)
	}
	h.driver.Reset()
	eventually.True(t, "targets rebuilt", func() bool { return len(h.targets()) == len(nodes) })
	for _, n := range nodes {
		if _, ok := h.target(api.TargetIQN("", "default", n)); !ok {
			t.Errorf("target of %s not rebuilt", n)
		}
		h.waitReady("default", n, 1)
	}
	if c := h.store.Clones(); c != len(nodes) {
		t.Errorf("%d clones for %d nodes: the disks survive a reboot and must not be cloned again", c, len(nodes))
	}
}

// After a reboot emptied the target system, a restarted agent says at
// once that its nodes are not served, not when each node's turn in the
// queue comes (their statuses said Ready from before the reboot); each says
// Ready again once its target is built, and the agent's Problem counts
// the targets still to build.
func TestRestartAfterRebootSaysUnavailableUntilRebuilt(t *testing.T) {
	var hold atomic.Bool
	release := make(chan struct{})
	h := newHarness(t, func(o *fakestore.Options) {
		o.BeforeStatDisk = func(ctx context.Context, _, _ string) {
			if hold.Load() {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
		}
	})
	h.start()
	h.putImage("default", "golden", 1)
	nodes := []string{"node-01", "node-02", "node-03"}
	for _, n := range nodes {
		h.assign(assignment("default", n, 1))
	}
	for _, n := range nodes {
		h.waitReady("default", n, 1)
	}
	h.stop()
	h.driver.Reset() // the reboot
	hold.Store(true) // the restarted agent's passes wait
	h.start(func(c *reconciler.Config) { c.Workers = 1; c.ProgressAfter = time.Hour })
	for _, n := range nodes {
		st := h.waitStatus("default", n, "Unavailable", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseUnavailable })
		if !strings.Contains(st.Message, "builds it again") {
			t.Errorf("%s: message %q", n, st.Message)
		}
	}
	if p := h.r.Problem(); !strings.Contains(p, "rebuilding 3 target(s)") {
		t.Errorf("Problem() = %q while no target is built", p)
	}
	close(release)
	for _, n := range nodes {
		h.waitReady("default", n, 1)
	}
	eventually.True(t, "no problem once every target is built", func() bool { return h.r.Problem() == "" })
}

func TestGCRemovesOnlyUnwantedSanbootTargets(t *testing.T) {
	h := newHarness(t)
	mk := func(iqn string) target.Target {
		return target.Target{IQN: iqn, BackingPath: "/var/lib/other/x.raw", SizeBytes: 1 << 20,
			Initiators: []string{"iqn.2026-11.org.example:init"}, Portals: []string{"127.0.0.1:3260"}, Serial: "x1"}
	}
	gone := api.TargetIQN("", "default", "gone")
	foreign := "iqn.2003-01.org.linux-iscsi.host:sn.1234"
	for _, iqn := range []string{gone, foreign} {
		if err := h.driver.Ensure(ctx, mk(iqn)); err != nil {
			t.Fatal(err)
		}
	}
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	h.start() // the first resync has run when start returns
	h.waitReady("default", "node-01", 1)
	if _, ok := h.target(gone); ok {
		t.Errorf("unwanted sanboot target %s survived the resync", gone)
	}
	if _, ok := h.target(foreign); !ok {
		t.Errorf("foreign target %s was removed", foreign)
	}
	if _, ok := h.target(api.TargetIQN("", "default", "node-01")); !ok {
		t.Errorf("wanted target removed")
	}
}

// An assignment removed without the deleting step (by hand, say): its
// target goes, its disk stays as an orphan.
func TestRemovedAssignmentLosesTargetKeepsDisk(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	a := assignment("default", "node-01", 1)
	h.assign(a)
	h.waitReady("default", "node-01", 1)
	if _, err := h.cli.Delete(ctx, api.AssignKey(agent, "default", "node-01")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "target removed", func() bool { _, ok := h.target(a.TargetIqn); return !ok })
	h.r.Resync()
	if _, err := h.store.StatDisk(ctx, "default", "node-01"); err != nil {
		t.Errorf("orphan disk deleted: %v", err)
	}
}

func TestInvalidAssignmentFails(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*sanbootv1.Assignment)
		want   []string
	}{
		{"bad initiator IQN", func(a *sanbootv1.Assignment) { a.InitiatorIqn = "node-01-initiator" },
			[]string{"assignment.initiatorIqn", "node-01-initiator", "nothing was created"}},
		{"bad target IQN", func(a *sanbootv1.Assignment) { a.TargetIqn = "iqn.bad" },
			[]string{"assignment.targetIqn", "iqn.bad", "nothing was created"}},
		{"no image", func(a *sanbootv1.Assignment) { a.Spec.Image = "" }, []string{"spec.image", "is required"}},
		{"chap", func(a *sanbootv1.Assignment) { a.Spec.Chap = true }, []string{"spec.chap", "turn chap off"}},
	}
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	for i, tc := range cases {
		node := fmt.Sprintf("node-%02d", i)
		a := assignment("default", node, 1)
		tc.mutate(a)
		h.assign(a)
		st := h.waitStatus("default", node, "Failed", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseFailed })
		for _, w := range tc.want {
			if !strings.Contains(st.Message, w) {
				t.Errorf("%s: message %q does not contain %q", tc.name, st.Message, w)
			}
		}
		if st.ObservedGeneration != 1 {
			t.Errorf("%s: observed generation %d", tc.name, st.ObservedGeneration)
		}
	}
	if d, _ := h.store.ListDisks(ctx); len(d) != 0 {
		t.Errorf("invalid assignments created disks %v", d)
	}
	if l := h.targets(); len(l) != 0 {
		t.Errorf("invalid assignments created targets %v", l)
	}
	// Fixing the spec (a new assignment revision) makes it Ready.
	a := assignment("default", "node-00", 2)
	h.assign(a)
	h.waitReady("default", "node-00", 2)
}

func TestRestartKeepsAssignments(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	h.waitReady("default", "node-01", 1)
	h.stop()

	h.start()
	h.waitReady("default", "node-01", 1)
	if _, ok := h.target(api.TargetIQN("", "default", "node-01")); !ok {
		t.Errorf("target gone after a restart")
	}
	if c := h.store.Clones(); c != 1 {
		t.Errorf("%d clones: a restart must not clone again", c)
	}
	// And it still follows changes.
	a := assignment("default", "node-01", 2)
	h.assign(a)
	h.waitReady("default", "node-01", 2)
}

func TestNodeWaitsForItsImage(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.assign(assignment("default", "node-01", 1))
	st := h.waitStatus("default", "node-01", "Failed", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseFailed })
	if !strings.Contains(st.Message, `image "golden" does not exist in project "default"`) {
		t.Errorf("message %q", st.Message)
	}
	h.putImage("default", "golden", 1)
	h.waitReady("default", "node-01", 1)
}

func TestImageForOtherAgents(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1, "agent-2")
	h.assign(assignment("default", "node-01", 1))
	st := h.waitStatus("default", "node-01", "Failed", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseFailed })
	if !strings.Contains(st.Message, `not replicated to agent "agent-1"`) {
		t.Errorf("message %q", st.Message)
	}
	if _, err := h.store.StatImage(ctx, "default", "golden"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("image for another agent imported here: %v", err)
	}
	// Adding this agent to the image's agents brings the node up.
	h.putImage("default", "golden", 2, "agent-2", agent)
	h.waitReady("default", "node-01", 1)
}

func TestImageReplicaFollowsSpec(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	replica := func() (*sanbootv1.ImageReplica, bool) {
		rep := &sanbootv1.ImageReplica{}
		_, err := kv.Get(ctx, h.cli, api.ReplicaKey("default", "golden", agent), rep)
		return rep, err == nil
	}
	eventually.True(t, "replica Ready", func() bool { r, ok := replica(); return ok && r.Phase == api.ReplicaReady && r.ObservedGeneration == 1 })
	h.putImage("default", "golden", 2)
	eventually.True(t, "replica observes generation 2", func() bool { r, ok := replica(); return ok && r.ObservedGeneration == 2 })

	if _, err := h.cli.Delete(ctx, api.ImageKey("default", "golden")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "replica removed", func() bool { _, ok := replica(); return !ok })
	eventually.True(t, "copy removed", func() bool {
		_, err := h.store.StatImage(ctx, "default", "golden")
		return errors.Is(err, store.ErrNotFound)
	})
}

// A full copy takes time: the status says Provisioning before it starts.
func TestProvisioningBeforeASlowCopy(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(o *fakestore.Options) {
		o.CloneMode = store.CloneCopy
		o.BeforeClone = holdUntil(release)
	})
	h.start()
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	st := h.waitStatus("default", "node-01", "Provisioning", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseProvisioning })
	if !strings.Contains(st.Message, "full copy") {
		t.Errorf("message %q", st.Message)
	}
	close(release)
	st = h.waitReady("default", "node-01", 1)
	if st.CloneMode != string(store.CloneCopy) {
		t.Errorf("clone mode %q", st.CloneMode)
	}
}

// Work that is usually instant but takes a while this time reports
// Provisioning after ProgressAfter.
func TestProvisioningWhenWorkTakesAWhile(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, func(o *fakestore.Options) {
		o.BeforeClone = holdUntil(release)
	})
	h.start(func(c *reconciler.Config) { c.ProgressAfter = 50 * time.Millisecond })
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	st := h.waitStatus("default", "node-01", "Provisioning", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseProvisioning })
	if !strings.Contains(st.Message, `cloning image "golden"`) {
		t.Errorf("message %q", st.Message)
	}
	close(release)
	h.waitReady("default", "node-01", 1)
}

// A Ready node that a pass checks again (its assignment listed again after
// a control-plane member went away, a resync) stays Ready however long
// the check takes: it does not flap to Provisioning while it is served.
func TestReadyNodeStaysReadyWhileRechecked(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *reconciler.Config) { c.ProgressAfter = 50 * time.Millisecond })
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	h.waitReady("default", "node-01", 1)
	var checks atomic.Int32
	h.driver.FailWith(func(op, iqn string) error {
		if op == "ensure" {
			checks.Add(1)
			time.Sleep(500 * time.Millisecond) // a busy target system
		}
		return nil
	})
	h.assign(assignment("default", "node-01", 1)) // the same again, as a re-listed watch delivers it
	eventually.True(t, "the target checked again", func() bool { return checks.Load() > 0 })
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if st, ok := h.status("default", "node-01"); !ok || st.Phase != api.PhaseReady {
			t.Fatalf("while its target was checked again the node said %v", st)
		}
	}
}

func TestDriverFailureIsReportedAndRetried(t *testing.T) {
	h := newHarness(t)
	h.driver.FailWith(func(op, iqn string) error { return errors.New("tgtd is not running") })
	h.start()
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	// The agent's watches of images and assignments are separate: the
	// node may first fail for an image not seen yet; wait for the driver's.
	st := h.waitStatus("default", "node-01", "Failed by the driver", func(st *sanbootv1.NodeStatus) bool {
		return st.Phase == api.PhaseFailed && strings.Contains(st.Message, "tgtd is not running")
	})
	for _, w := range []string{"fake driver", "tgtd is not running", "retries"} {
		if !strings.Contains(st.Message, w) {
			t.Errorf("message %q does not contain %q", st.Message, w)
		}
	}
	h.driver.FailWith(nil)
	h.waitReady("default", "node-01", 1)
}

func TestOrphanDiskIsKept(t *testing.T) {
	h := newHarness(t)
	if _, err := h.store.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "old", SizeBytes: 1 << 20,
		Source: store.Source{Kind: store.SourceBlank}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Clone(ctx, "default", "old", "orphan", ""); err != nil {
		t.Fatal(err)
	}
	h.start(func(c *reconciler.Config) { c.ResyncInterval = 100 * time.Millisecond })
	// The image has no spec: its copy goes. The disk has no assignment: it stays.
	eventually.True(t, "image without spec removed", func() bool {
		_, err := h.store.StatImage(ctx, "default", "old")
		return errors.Is(err, store.ErrNotFound)
	})
	h.passResyncs(3)
	if _, err := h.store.StatDisk(ctx, "default", "orphan"); err != nil {
		t.Errorf("orphan disk deleted: %v", err)
	}
}

// BenchmarkProvision1000 provisions 1,000 nodes through etcd and the fake
// store and driver: assignments written 100 per transaction, as the
// scheduler does, until all 1,000 statuses say Ready.
func BenchmarkProvision1000(b *testing.B) {
	const n = 1000
	m := etcdtest.Start(b)
	cli := m.Client(b)
	s, err := fakestore.New(fakestore.Options{Root: "/var/lib/sanboot", CapacityBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	r, err := reconciler.New(reconciler.Config{Agent: agent, Client: cli, Store: s, Driver: faketarget.New(),
		Portals: []string{"127.0.0.1:3260"}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(c) }()
	defer func() { cancel(); <-done }()
	<-r.Synced()
	im, _ := proto.Marshal(&sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Generation: 1}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 30}})
	b.ResetTimer()
	for i := range b.N {
		project := fmt.Sprintf("p%d", i)
		if _, err := cli.Put(ctx, api.ImageKey(project, "golden"), string(im)); err != nil {
			b.Fatal(err)
		}
		wctx, stopWatch := context.WithCancel(ctx)
		w := cli.Watch(wctx, api.AgentNodeStatusPrefix(agent)+project+"/", clientv3.WithPrefix())
		for j := 0; j < n; j += 100 {
			var ops []clientv3.Op
			for k := j; k < j+100; k++ {
				v, _ := proto.Marshal(assignment(project, fmt.Sprintf("n%d", k), 1))
				ops = append(ops, clientv3.OpPut(api.AssignKey(agent, project, fmt.Sprintf("n%d", k)), string(v)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				b.Fatal(err)
			}
		}
		ready := map[string]bool{}
		for resp := range w {
			for _, ev := range resp.Events {
				st := &sanbootv1.NodeStatus{}
				if proto.Unmarshal(ev.Kv.Value, st) == nil && st.Phase == api.PhaseReady {
					ready[string(ev.Kv.Key)] = true
				}
			}
			if len(ready) == n {
				break
			}
		}
		stopWatch()
	}
}

func TestCHAPFromTheAssignment(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	for _, mutual := range []bool{false, true} {
		node := "chap-" + strconv.FormatBool(mutual)
		a := assignment("default", node, 1)
		a.Spec.Chap, a.Spec.MutualChap = true, mutual
		a.Chap = &sanbootv1.ChapSecret{User: "default." + node, Secret: "incoming-secret-0123",
			MutualUser: "default." + node + ".target", MutualSecret: "mutual-secret-012345"}
		h.assign(a)
		st := h.waitReady("default", node, 1)
		if strings.Contains(st.String(), "secret-0") {
			t.Errorf("status carries a secret: %v", st)
		}
		tg, ok := h.target(a.TargetIqn)
		if !ok || tg.CHAP == nil {
			t.Fatalf("target %v has no CHAP", tg)
		}
		if tg.CHAP.Incoming.User != "default."+node || tg.CHAP.Incoming.Secret.Reveal() != "incoming-secret-0123" {
			t.Errorf("incoming CHAP = %v", tg.CHAP)
		}
		if got := tg.CHAP.Mutual != nil; got != mutual {
			t.Errorf("mutual CHAP set = %v, want %v", got, mutual)
		}
		if mutual && tg.CHAP.Mutual.Secret.Reveal() != "mutual-secret-012345" {
			t.Errorf("mutual CHAP = %v", tg.CHAP.Mutual)
		}
	}
}

// A disk left by an earlier node of the same name (another uid) is neither
// served to the new node nor deleted with it.
func TestDiskOfAnEarlierNodeIsNotTaken(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.putImage("default", "golden", 1)
	eventually.True(t, "the image in the store", func() bool {
		_, err := h.store.StatImage(ctx, "default", "golden")
		return err == nil
	})
	if _, err := h.store.Clone(ctx, "default", "golden", "node-01", "uid-earlier"); err != nil {
		t.Fatal(err)
	}
	a := assignment("default", "node-01", 1) // uid "uid-node-01"
	h.assign(a)
	st := h.waitStatus("default", "node-01", "Failed", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseFailed })
	if !strings.Contains(st.Message, "earlier node") {
		t.Errorf("message %q does not say whose disk it is", st.Message)
	}
	if _, ok := h.target(a.TargetIqn); ok {
		t.Errorf("the earlier node's disk is served to the new node")
	}
	a.Deleting = true
	h.assign(a)
	h.waitStatus("default", "node-01", "Deleted", func(st *sanbootv1.NodeStatus) bool { return st.Phase == api.PhaseDeleted })
	if d, err := h.store.StatDisk(ctx, "default", "node-01"); err != nil || d.Owner != "uid-earlier" {
		t.Errorf("the earlier node's disk after the new node's deletion: %+v, %v", d, err)
	}
}

// TestStatusListsSessions: a Ready node's status lists who is logged in to
// its target (on the FAKE driver's logins), refreshed at the resync, and a
// rebuilt target lists them at once; through a driver that reports
// sessions with Ensure and lists them all at once (target.SessionReporter,
// as tgt) and through one asked per target (as LIO).
func TestStatusListsSessions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		driver func(*faketarget.Driver) target.Driver
	}{
		{"SessionReporter", func(d *faketarget.Driver) target.Driver { return d }},
		{"SessionsPerTarget", func(d *faketarget.Driver) target.Driver { return struct{ target.Driver }{d} }},
	} {
		t.Run(tc.name, func(t *testing.T) { testStatusListsSessions(t, tc.driver) })
	}
}

func testStatusListsSessions(t *testing.T, driver func(*faketarget.Driver) target.Driver) {
	h := newHarness(t)
	h.start(func(c *reconciler.Config) {
		c.ResyncInterval = 200 * time.Millisecond
		c.Driver = driver(h.driver)
	})
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	st := h.waitReady("default", "node-01", 1)
	if len(st.Sessions) != 0 {
		t.Errorf("sessions before any login = %v, want none", st.Sessions)
	}
	iqn, in := api.TargetIQN("", "default", "node-01"), api.DefaultInitiatorIQN("default", "node-01")
	if err := h.driver.Login(iqn, in, "10.99.0.7"); err != nil {
		t.Fatal(err)
	}
	st = h.waitStatus("default", "node-01", "listing the session", func(st *sanbootv1.NodeStatus) bool { return len(st.Sessions) > 0 })
	want := []*sanbootv1.TargetSession{{Initiator: in, Address: "10.99.0.7"}}
	if st.Phase != api.PhaseReady || len(st.Sessions) != 1 || !proto.Equal(st.Sessions[0], want[0]) {
		t.Errorf("status after the login = %v; want Ready with sessions %v", st, want)
	}
	h.driver.Logout(iqn, in)
	h.waitStatus("default", "node-01", "without the session", func(st *sanbootv1.NodeStatus) bool {
		return st.Phase == api.PhaseReady && len(st.Sessions) == 0
	})
}

// TestReadyNodeStaysReadyWhileChecked: a pass over a Ready node (its
// sessions changed) whose store calls are slow (a loaded Ceph) never
// reports it Provisioning, without portals, meanwhile.
func TestReadyNodeStaysReadyWhileChecked(t *testing.T) {
	var slow atomic.Bool
	h := newHarness(t, func(o *fakestore.Options) {
		o.BeforeStatDisk = slowWhile(&slow, 300*time.Millisecond, nil)
	})
	h.start(func(c *reconciler.Config) {
		c.ProgressAfter = 20 * time.Millisecond
		c.ResyncInterval = 100 * time.Millisecond
	})
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	h.waitReady("default", "node-01", 1)
	slow.Store(true)
	iqn, in := api.TargetIQN("", "default", "node-01"), api.DefaultInitiatorIQN("default", "node-01")
	if err := h.driver.Login(iqn, in, "10.99.0.7"); err != nil {
		t.Fatal(err)
	}
	// Until the pass lists the session, every status read says Ready.
	for end := time.Now().Add(wait); ; time.Sleep(5 * time.Millisecond) {
		st, ok := h.status("default", "node-01")
		if ok && st.Phase != api.PhaseReady {
			t.Fatalf("a Ready node said %s (%q) while a pass checked it", st.Phase, st.Message)
		}
		if ok && len(st.Sessions) > 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the pass never listed the session; last status %v", st)
		}
	}
}

// TestReadyImageStaysReadyWhileChecked: resyncs over a Ready image whose
// store is slow (a loaded Ceph measuring an RBD clone's depth) never
// report its replica Pending meanwhile.
func TestReadyImageStaysReadyWhileChecked(t *testing.T) {
	var slow atomic.Bool
	var passes atomic.Int32
	h := newHarness(t, func(o *fakestore.Options) {
		o.BeforeEnsureImage = slowWhile(&slow, 100*time.Millisecond, &passes)
	})
	h.start(func(c *reconciler.Config) {
		c.ProgressAfter = 10 * time.Millisecond
		c.ResyncInterval = 50 * time.Millisecond
	})
	h.putImage("default", "golden", 1)
	replica := func() (*sanbootv1.ImageReplica, bool) {
		rep := &sanbootv1.ImageReplica{}
		_, err := kv.Get(ctx, h.cli, api.ReplicaKey("default", "golden", agent), rep)
		return rep, err == nil
	}
	eventually.True(t, "replica Ready", func() bool { r, ok := replica(); return ok && r.Phase == api.ReplicaReady })
	slow.Store(true)
	for end := time.Now().Add(wait); passes.Load() < 3; time.Sleep(5 * time.Millisecond) {
		if r, ok := replica(); ok && r.Phase != api.ReplicaReady {
			t.Fatalf("a Ready image's replica said %s (%q) while a resync checked it", r.Phase, r.Message)
		}
		if time.Now().After(end) {
			t.Fatalf("only %d slow passes over the image in %v", passes.Load(), wait)
		}
	}
}

// TestSessionsAreBounded: a status lists at most api.MaxNodeSessions.
func TestSessionsAreBounded(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *reconciler.Config) { c.ResyncInterval = 200 * time.Millisecond })
	h.putImage("default", "golden", 1)
	a := assignment("default", "node-01", 1)
	var ins []string
	for i := range api.MaxNodeSessions + 3 {
		ins = append(ins, fmt.Sprintf("iqn.2026-11.io.example:host-%02d", i))
	}
	a.Spec.InitiatorIqn, a.InitiatorIqn = ins[0], ins[0]
	h.assign(a)
	h.waitReady("default", "node-01", 1)
	iqn := api.TargetIQN("", "default", "node-01")
	// The fake's ACL has one initiator; many logins of it stand for many.
	for i := range ins {
		if err := h.driver.Login(iqn, ins[0], fmt.Sprintf("10.99.0.%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	st := h.waitStatus("default", "node-01", "listing sessions", func(st *sanbootv1.NodeStatus) bool { return len(st.Sessions) > 0 })
	if len(st.Sessions) != api.MaxNodeSessions {
		t.Errorf("status lists %d sessions of %d, want %d", len(st.Sessions), len(ins), api.MaxNodeSessions)
	}
}
