package apiserver_test

import (
	"errors"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/placement"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

// caughtUp waits until the API server's cache has seen every write made
// so far (the last of them under api.Prefix).
func (e *env) caughtUp() {
	e.t.Helper()
	resp, err := e.cli.Get(e.ctx, api.Prefix, clientv3.WithCountOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	eventually.True(e.t, fmt.Sprintf("the API's cache at revision %d", resp.Header.Revision), func() bool {
		return apiserver.CacheRevision(e.srv) >= resp.Header.Revision
	}, eventually.Seen(func() string { return fmt.Sprint(apiserver.CacheRevision(e.srv)) }))
}

// placedAtCreate reports whether node name's placement and assignment
// were written in the transaction that created it (same mod_revision as
// the node) on agent, with the records the scheduler would write; it
// fails the test if the node is placed otherwise. With no placement at
// all it returns false.
func (e *env) placedAtCreate(name, agent string) bool {
	e.t.Helper()
	var n sanbootv1.Node
	nodeRev, err := kv.Get(e.ctx, e.cli, api.NodeKey(api.DefaultProject, name), &n)
	if err != nil {
		e.t.Fatalf("node %s: %v", name, err)
	}
	var pl sanbootv1.Placement
	plRev, err := kv.Get(e.ctx, e.cli, api.PlacementKey(api.DefaultProject, name), &pl)
	if errors.Is(err, kv.ErrNotFound) {
		return false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if plRev != nodeRev || !proto.Equal(&pl, placement.Placed(agent, 1)) {
		e.t.Fatalf("node %s (rev %d) placed at rev %d: %v, want %v in its create", name, nodeRev, plRev, &pl, placement.Placed(agent, 1))
	}
	var sec sanbootv1.ChapSecret
	secret := &sec
	if _, err := kv.Get(e.ctx, e.cli, api.SecretKey(api.DefaultProject, name), &sec); errors.Is(err, kv.ErrNotFound) {
		secret = nil
	} else if err != nil {
		e.t.Fatal(err)
	}
	var asg sanbootv1.Assignment
	asgRev, err := kv.Get(e.ctx, e.cli, api.AssignKey(agent, api.DefaultProject, name), &asg)
	want := placement.Assignment(state.Ref{Project: api.DefaultProject, Name: name}, &n, secret)
	if err != nil || asgRev != nodeRev || !proto.Equal(&asg, want) {
		e.t.Fatalf("node %s (rev %d): assignment on %s at rev %d: %v (%v), want %v", name, nodeRev, agent, asgRev, &asg, err, want)
	}
	return true
}

// unplaced fails the test unless node name has no placement.
func (e *env) unplaced(name string) {
	e.t.Helper()
	resp, err := e.cli.Get(e.ctx, api.PlacementKey(api.DefaultProject, name))
	if err != nil || len(resp.Kvs) != 0 {
		e.t.Fatalf("node %s: placement %v (%v), want none", name, resp.Kvs, err)
	}
}

// A node whose agent is forced (the only live agent holding a Ready
// replica of its image, or its pinned agent) is placed in the
// transaction that creates it, by PutNode and by PutNodes, with exactly
// the records the scheduler would write (CHAP credentials, MACs, a
// hundred nodes per transaction). No scheduler runs here.
func TestPlacedAtCreate(t *testing.T) {
	e := start(t, withoutScheduler)
	e.image("", "base")
	e.image("", "other")
	e.agent("a", 10, "base")
	e.agent("b", 10, "other")
	e.caughtUp()

	got := e.node("one", "base")
	if !e.placedAtCreate("one", "a") {
		t.Fatal("PutNode did not place node one on a, the only agent holding its image")
	}
	if got.GetStatus().GetAgent() != "a" {
		t.Errorf("PutNode's answer: status %v, want agent a", got.GetStatus())
	}
	pinned := newNode("pinned", "other")
	pinned.Spec.Agent = "b"
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: pinned}); err != nil {
		t.Fatal(err)
	}
	if !e.placedAtCreate("pinned", "b") {
		t.Fatal("node pinned to b not placed at its creation")
	}

	// A batch the size of one transaction's budget: 16 MACs and CHAP each.
	var nodes []*sanbootv1.Node
	for i := range 120 {
		n := newNode(fmt.Sprintf("n%03d", i), "base")
		n.Spec.Chap, n.Spec.MutualChap = true, i%2 == 0
		for m := range api.MaxMACs {
			n.Spec.Macs = append(n.Spec.Macs, fmt.Sprintf("52:54:00:00:%02x:%02x", i, m))
		}
		nodes = append(nodes, n)
	}
	resp, err := e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.GetResults() {
		if r.GetResult() != sanbootv1.PutResult_PUT_RESULT_CREATED || r.GetNode().GetStatus().GetAgent() != "a" {
			t.Fatalf("node %d: %v", i, r)
		}
		if !e.placedAtCreate(nodes[i].Metadata.Name, "a") {
			t.Fatalf("node %s not placed at its creation", nodes[i].Metadata.Name)
		}
	}
}

// When the choice is not forced, or the decision no longer holds when the
// create commits, the node is created unplaced (the scheduler places it:
// none runs here).
func TestNotPlacedAtCreate(t *testing.T) {
	e := start(t, withoutScheduler)
	t.Cleanup(e.hold.Resume) // a test that fails while the cache is held stops
	e.image("", "base")
	a := e.agent("a", 10, "base")
	b := e.agent("b", 10, "base")
	e.caughtUp()

	// Two candidates: the loads decide, which is the scheduler's to do.
	e.node("two", "base")
	e.unplaced("two")

	// b's replica is not Ready: a is the only candidate.
	if err := b.SetReplica(e.ctx, api.DefaultProject, "base", api.ReplicaPending); err != nil {
		t.Fatal(err)
	}
	e.caughtUp()
	e.node("one", "base")
	if !e.placedAtCreate("one", "a") {
		t.Fatal("node one not placed on a, the only agent with a Ready replica")
	}

	// a's replica stops being Ready, the API's cache not yet told: the
	// comparison of the replica fails.
	e.hold.Pause()
	if err := a.SetReplica(e.ctx, api.DefaultProject, "base", api.ReplicaPending); err != nil {
		t.Fatal(err)
	}
	e.node("replica-changed", "base")
	e.unplaced("replica-changed")
	e.hold.Resume()
	if err := a.SetReplica(e.ctx, api.DefaultProject, "base", api.ReplicaReady); err != nil {
		t.Fatal(err)
	}
	e.caughtUp()

	// a's lease is gone, the API's cache not yet told: the comparison of
	// its alive key fails.
	e.hold.Pause()
	if err := a.Revoke(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.node("agent-gone", "base")
	e.unplaced("agent-gone")
	e.hold.Resume()

	// No agent at all holds the image.
	e.image("", "lonely")
	e.caughtUp()
	e.node("no-agent", "lonely")
	e.unplaced("no-agent")
}

// A node placed at its creation is the scheduler's like any other: when
// its agent dies it fails over to another agent of the storage domain
// (the old assignment gone in the same step), and its deletion goes
// through its agent's teardown.
func TestPlacedAtCreateFailsOver(t *testing.T) {
	e := start(t)
	e.image("", "img")
	a, b := e.agent("a", 10, "img"), e.agent("b", 10, "img")
	for _, name := range []string{"a", "b"} {
		var rec sanbootv1.AgentRecord
		rev, err := kv.Get(e.ctx, e.cli, api.AgentKey(name), &rec)
		if err != nil {
			t.Fatal(err)
		}
		rec.StoreKind, rec.StorageDomain = "rbd", "rbd:fsid/pool"
		if _, err := kv.CAS(e.ctx, e.cli, api.AgentKey(name), rev, &rec); err != nil {
			t.Fatal(err)
		}
	}
	e.caughtUp()
	n := newNode("n1", "img")
	n.Spec.Agent = "a" // forced: a and b both hold the image
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
		t.Fatal(err)
	}
	if !e.placedAtCreate("n1", "a") {
		t.Fatal("node pinned to a not placed at its creation")
	}
	go b.Serve(e.ctx, e.log)

	if err := a.Revoke(e.ctx); err != nil { // a crashes
		t.Fatal(err)
	}
	e.waitNode("n1", func(n *sanbootv1.Node) bool {
		return n.GetStatus().GetAgent() == "b" && n.GetStatus().GetPhase() == api.PhaseReady
	})
	if resp, err := e.cli.Get(e.ctx, api.AssignKey("a", api.DefaultProject, "n1")); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("n1's assignment on the dead agent a: %v (%v), want it gone", resp.Kvs, err)
	}

	if _, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "n1 gone", func() bool {
		_, err := e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
		return err != nil
	}, eventually.Seen(func() string { return "still there" }))
}

// The scheduler finds a node placed at its creation up to date and writes
// nothing for it: its records are exactly the scheduler's own. Node "b"
// has two candidates, so the scheduler places it; it plans the nodes in
// the order their changes came, so by the time b is placed it has planned
// "a", created before.
func TestSchedulerLeavesAPlacementAtCreate(t *testing.T) {
	e := start(t)
	e.image("", "one")
	e.image("", "two")
	e.agent("x", 10, "one", "two")
	e.agent("y", 10, "two")
	e.caughtUp()

	a := newNode("a", "one")
	a.Spec.Chap, a.Spec.MutualChap = true, true
	a.Spec.Macs = []string{"52:54:00:00:00:0a"}
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: a}); err != nil {
		t.Fatal(err)
	}
	if !e.placedAtCreate("a", "x") {
		t.Fatal("node a not placed at its creation")
	}
	e.node("b", "two")
	e.waitNode("b", func(n *sanbootv1.Node) bool { return n.GetStatus().GetAgent() != "" })
	if !e.placedAtCreate("a", "x") { // fails the test if a's records were written again
		t.Fatal("node a lost its placement")
	}
}
