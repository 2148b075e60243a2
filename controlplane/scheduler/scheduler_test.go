package scheduler_test

import (
	"context"
	"errors"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
	"github.com/sanboot/sanboot/controlplane/scheduler"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

const project, image = "default", "img"

// The scheduler's decisions are table tests of plan over the in-memory
// store (plan_test.go); these few run it end to end on a real etcd: the
// plans reach etcd, and the changes that should queue a node do.

// env is a real etcd member with a scheduler running on it.
type env struct {
	t   *testing.T
	cli *clientv3.Client
	ctx context.Context
}

func start(t *testing.T) *env {
	t.Helper()
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	log := cptest.Log(t)
	go func() {
		defer close(done)
		scheduler.New(cli, scheduler.Config{Log: log}).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &env{t: t, cli: cli, ctx: ctx}
}

// agent registers a fake agent whose replica of the image is in phase
// (none when empty).
func (e *env) agent(name, replica string) *fakeagent.Agent {
	e.t.Helper()
	a, err := fakeagent.Register(e.ctx, e.cli, name, 10)
	if err != nil {
		e.t.Fatal(err)
	}
	if replica != "" {
		if err := a.SetReplica(e.ctx, project, image, replica); err != nil {
			e.t.Fatal(err)
		}
	}
	return a
}

// putNode writes a node record as the API server does.
func (e *env) putNode(name string, spec *sanbootv1.NodeSpec) {
	e.t.Helper()
	e.updateNode(name, func(n *sanbootv1.Node) { n.Spec = spec })
}

// updateNode reads, changes and writes back a node (creating it if needed).
func (e *env) updateNode(name string, change func(*sanbootv1.Node)) {
	e.t.Helper()
	var n sanbootv1.Node
	rev, err := kv.Get(e.ctx, e.cli, api.NodeKey(project, name), &n)
	if errors.Is(err, kv.ErrNotFound) {
		n = sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name}, Spec: &sanbootv1.NodeSpec{Image: image}}
	} else if err != nil {
		e.t.Fatal(err)
	}
	old := proto.CloneOf(n.Spec)
	change(&n)
	if !proto.Equal(old, n.Spec) || rev == 0 {
		n.Metadata.Generation++
	}
	if _, err := kv.CAS(e.ctx, e.cli, api.NodeKey(project, name), rev, &n); err != nil {
		e.t.Fatal(err)
	}
}

// waitPlacement waits until node's placement satisfies ok and returns it.
func (e *env) waitPlacement(node string, ok func(*sanbootv1.Placement) bool) *sanbootv1.Placement {
	e.t.Helper()
	var p sanbootv1.Placement
	eventually.True(e.t, "placement of "+node, func() bool {
		_, err := kv.Get(e.ctx, e.cli, api.PlacementKey(project, node), &p)
		return err == nil && ok(&p)
	}, eventually.Seen(func() string { return p.String() }))
	return &p
}

func (e *env) assignment(agent, node string) (*sanbootv1.Assignment, error) {
	var a sanbootv1.Assignment
	_, err := kv.Get(e.ctx, e.cli, api.AssignKey(agent, project, node), &a)
	return &a, err
}

// waitDeleting waits until the agent's assignment of the node asks for
// its teardown, and returns it.
func (e *env) waitDeleting(agent, node string) *sanbootv1.Assignment {
	e.t.Helper()
	var asg *sanbootv1.Assignment
	eventually.True(e.t, "teardown of "+node+" asked of "+agent, func() bool {
		var err error
		asg, err = e.assignment(agent, node)
		return err == nil && asg.Deleting
	}, eventually.Seen(func() string { return asg.String() }))
	return asg
}

func (e *env) count(prefix string) int64 {
	e.t.Helper()
	resp, err := e.cli.Get(e.ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Count
}

func placedOn(p *sanbootv1.Placement) bool { return p.Agent != "" }

func TestPendingUntilAnAgentHoldsTheImage(t *testing.T) {
	e := start(t)
	a := e.agent("a", "Pending")
	e.putNode("n1", &sanbootv1.NodeSpec{Image: image})
	p := e.waitPlacement("n1", func(p *sanbootv1.Placement) bool { return p.Message != "" })
	if p.Agent != "" || p.Message != `no Ready agent holds image "img"` {
		t.Fatalf("placement = %v", p)
	}
	if err := a.SetReplica(e.ctx, project, image, api.ReplicaReady); err != nil {
		t.Fatal(err)
	}
	p = e.waitPlacement("n1", placedOn)
	if p.Agent != "a" || p.Message != "" || p.Reason != api.ReasonScheduled {
		t.Fatalf("placement = %v", p)
	}
}

func TestLeastLoadedSpreads(t *testing.T) {
	e := start(t)
	e.agent("a", "Ready")
	e.agent("b", "Ready")
	// Three nodes pinned to a: a is loaded, b is not.
	for _, n := range []string{"p1", "p2", "p3"} {
		e.putNode(n, &sanbootv1.NodeSpec{Image: image, Agent: "a"})
	}
	for _, n := range []string{"p1", "p2", "p3"} {
		e.waitPlacement(n, placedOn)
	}
	// Five more, all at once: b takes the first three, then they alternate.
	ops := []clientv3.Op{}
	for _, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
		op, _ := kv.PutOp(api.NodeKey(project, n), &sanbootv1.Node{
			Metadata: &sanbootv1.ObjectMeta{Project: project, Name: n, Generation: 1}, Spec: &sanbootv1.NodeSpec{Image: image}})
		ops = append(ops, op)
	}
	if _, err := e.cli.Txn(e.ctx).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
		count[e.waitPlacement(n, placedOn).Agent]++
	}
	if count["a"] != 1 || count["b"] != 4 {
		t.Fatalf("new nodes per agent = %v, want a:1 b:4 (a already had 3)", count)
	}
	if got := e.count(api.AssignPrefix("a")); got != 4 {
		t.Fatalf("agent a has %d assignments, want 4", got)
	}
}

// TestStatusOfAnotherAgentGoes: only the placed agent's status of a node
// counts; a status another agent left (the agent the node moved from, dead
// or not) is deleted, and deleting the node deletes every agent's.
func TestStatusOfAnotherAgentGoes(t *testing.T) {
	e := start(t)
	a := e.agent("a", "Ready")
	e.putNode("n1", &sanbootv1.NodeSpec{Image: image, Agent: "a"})
	e.waitPlacement("n1", placedOn)
	if err := a.Report(e.ctx, project, "n1", api.PhaseReady, ""); err != nil {
		t.Fatal(err)
	}
	stray := func(agent string) {
		t.Helper()
		if _, err := kv.CAS(e.ctx, e.cli, api.NodeStatusKey(project, "n1", agent), 0, &sanbootv1.NodeStatus{Phase: api.PhaseReady, Agent: agent}); err != nil {
			t.Fatal(err)
		}
	}
	stray("b")
	eventually.True(t, "b's status of n1 to go", func() bool { return e.count(api.NodeStatusKey(project, "n1", "b")) == 0 },
		eventually.Seen(func() string { return "it is still there" }))
	if e.count(api.NodeStatusKey(project, "n1", "a")) != 1 {
		t.Fatal("the placed agent's status went too")
	}

	stray("c")
	e.updateNode("n1", func(n *sanbootv1.Node) { n.Metadata.DeleteTime = timestamppb.Now() })
	e.waitDeleting("a", "n1")
	if err := a.Report(e.ctx, project, "n1", api.PhaseDeleted, ""); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "every status of the deleted node to go", func() bool { return e.count(api.NodeStatusPrefix())+e.count(api.NodesPrefix("")) == 0 },
		eventually.Seen(func() string { return "records remain" }))
}

func TestDeletionTwoSteps(t *testing.T) {
	e := start(t)
	a := e.agent("a", "Ready")
	e.putNode("n1", &sanbootv1.NodeSpec{Image: image})
	e.waitPlacement("n1", placedOn)
	if err := a.Report(e.ctx, project, "n1", api.PhaseReady, ""); err != nil {
		t.Fatal(err)
	}

	// As DeleteNode with keep_disk does: delete_time and a spec change.
	e.updateNode("n1", func(n *sanbootv1.Node) {
		n.Metadata.DeleteTime = timestamppb.Now()
		n.Spec.KeepDisk = true
	})
	asg := e.waitDeleting("a", "n1")
	if asg.Generation != 2 || !asg.Spec.GetKeepDisk() {
		t.Fatalf("deleting assignment = %v, want generation 2 with keep_disk", asg)
	}
	// The records stay until the agent says it has torn the node down.
	if e.count(api.NodeKey(project, "n1")) != 1 || e.count(api.PlacementKey(project, "n1")) != 1 {
		t.Fatal("records of a node went before its agent tore it down")
	}
	// What the boot server recorded of the node's last script fetch.
	if _, err := e.cli.Put(e.ctx, api.BootFetchKey(project, "n1"), ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Report(e.ctx, project, "n1", api.PhaseDeleted, ""); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the node's records to go", func() bool {
		return e.count(api.Prefix+"nodes/")+e.count(api.Prefix+"placements/")+e.count(api.Prefix+"nodestatus/")+e.count(api.AssignPrefix(""))+
			e.count(api.BootFetchKey(project, "n1")) == 0
	}, eventually.Seen(func() string { return "records remain" }))
}

// A forced deletion waits while the agent is alive (it may still tear the
// node down) and finalizes as soon as the agent is unavailable.
func TestForcedDeletionOfANodeWhoseAgentIsGone(t *testing.T) {
	e := start(t)
	a := e.agent("a", "Ready")
	e.putNode("n1", &sanbootv1.NodeSpec{Image: image})
	e.waitPlacement("n1", placedOn)
	e.updateNode("n1", func(n *sanbootv1.Node) {
		n.Metadata.DeleteTime = timestamppb.Now()
		n.Metadata.ForceDelete = true
	})
	e.waitDeleting("a", "n1")
	if e.count(api.NodeKey(project, "n1")) != 1 {
		t.Fatal("a forced deletion did not wait for a live agent")
	}
	if err := a.Revoke(e.ctx); err != nil { // the host is gone for good
		t.Fatal(err)
	}
	eventually.True(t, "the node's records to go", func() bool {
		return e.count(api.Prefix+"nodes/")+e.count(api.Prefix+"placements/")+e.count(api.AssignPrefix("")) == 0
	}, eventually.Seen(func() string { return "records remain" }))
}
