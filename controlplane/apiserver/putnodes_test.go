package apiserver_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sanboot/sanboot/api"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// PutNodes creates new nodes a hundred per transaction, each with its own
// comparisons, and gives every node its own result: created, unchanged,
// configured, or its error.
func TestPutNodes(t *testing.T) {
	e := start(t)
	e.image("", "base")
	e.node("same", "base")
	e.node("other", "base")

	var nodes []*sanbootv1.Node
	for i := range 150 {
		nodes = append(nodes, newNode(fmt.Sprintf("n%03d", i), "base"))
	}
	nodes[7].Spec.Chap = true // its secret is written in the same nested transaction
	same, changed := newNode("same", "base"), newNode("other", "base")
	changed.Metadata.Labels = map[string]string{"rack": "r1"}
	nodes = append(nodes, same, changed, newNode("BAD_NAME", "base"), newNode("orphan", "nope"), newNode("n000", "base"))

	resp, err := e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	res := resp.GetResults()
	if len(res) != len(nodes) {
		t.Fatalf("%d results for %d nodes", len(res), len(nodes))
	}
	for i := range 150 {
		if r := res[i]; r.GetCode() != 0 || r.GetResult() != sanbootv1.PutResult_PUT_RESULT_CREATED || r.GetNode().GetMetadata().GetName() != nodes[i].Metadata.Name {
			t.Fatalf("node %d: %v", i, r)
		}
	}
	want := []struct {
		result sanbootv1.PutResult
		code   codes.Code
	}{
		{sanbootv1.PutResult_PUT_RESULT_UNCHANGED, codes.OK},
		{sanbootv1.PutResult_PUT_RESULT_CONFIGURED, codes.OK},
		{0, codes.InvalidArgument},
		{0, codes.FailedPrecondition},
		{sanbootv1.PutResult_PUT_RESULT_UNCHANGED, codes.OK}, // n000 again: created once
	}
	for k, w := range want {
		r := res[150+k]
		if r.GetResult() != w.result || codes.Code(r.GetCode()) != w.code {
			t.Errorf("%s: result %v code %v (%s), want %v %v", nodes[150+k].Metadata.Name, r.GetResult(), codes.Code(r.GetCode()), r.GetMessage(), w.result, w.code)
		}
	}
	// 150 creates in two transactions (100, then 50 and "orphan", which
	// failed its comparisons).
	revs := map[int64]int{}
	for i := range 150 {
		revs[res[i].GetNode().GetMetadata().GetRevision()]++
	}
	if len(revs) != 2 {
		t.Errorf("150 nodes created at revisions %v, want two transactions", revs)
	}
	if sec, err := e.cli.Get(e.ctx, api.SecretKey(api.DefaultProject, "n007")); err != nil || len(sec.Kvs) != 1 {
		t.Fatalf("the CHAP secret of n007: %v %v", sec, err)
	}
	n, err := e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n149"})
	if err != nil || n.GetSpec().GetImage() != "base" {
		t.Fatalf("GetNode n149: %v %v", n, err)
	}

	// Applied again: all unchanged, no node record written (the
	// scheduler writes beside, so etcd's revision is no measure here).
	first := res
	resp, err = e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{Nodes: nodes[:152]})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.GetResults() {
		if r.GetResult() != sanbootv1.PutResult_PUT_RESULT_UNCHANGED {
			t.Fatalf("again, node %d: %v", i, r)
		}
		if i < 150 && r.GetNode().GetMetadata().GetRevision() != first[i].GetNode().GetMetadata().GetRevision() {
			t.Fatalf("again, node %d was written: revision %d, created at %d", i, r.GetNode().GetMetadata().GetRevision(), first[i].GetNode().GetMetadata().GetRevision())
		}
	}

	// A new node named twice in one call is created once.
	resp, err = e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{Nodes: []*sanbootv1.Node{newNode("twice", "base"), newNode("twice", "base")}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResults(); r[0].GetResult() != sanbootv1.PutResult_PUT_RESULT_CREATED || r[1].GetResult() != sanbootv1.PutResult_PUT_RESULT_UNCHANGED {
		t.Fatalf("a node named twice: %v", r)
	}

	_, err = e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{Nodes: make([]*sanbootv1.Node, 257)})
	wantCode(t, err, codes.InvalidArgument, "at most 256")
}

// Two new nodes with one MAC in one call: the first is created, the second
// refused naming it (etcd would refuse a transaction that writes the MAC's
// index key twice, failing every node of the chunk).
func TestPutNodesOneMACTwice(t *testing.T) {
	e := start(t)
	e.image("", "base")
	a, b, c := newNode("a", "base"), newNode("b", "base"), newNode("c", "base")
	a.Spec.Macs = []string{"52:54:00:00:00:01"}
	b.Spec.Macs = []string{"52:54:00:00:00:01"}
	c.Spec.Macs = []string{"52:54:00:00:00:02"}
	resp, err := e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{Nodes: []*sanbootv1.Node{a, b, c}})
	if err != nil {
		t.Fatal(err)
	}
	res := resp.GetResults()
	if res[0].GetResult() != sanbootv1.PutResult_PUT_RESULT_CREATED || res[2].GetResult() != sanbootv1.PutResult_PUT_RESULT_CREATED {
		t.Errorf("a: %v; c: %v; want both created", res[0], res[2])
	}
	if codes.Code(res[1].GetCode()) != codes.FailedPrecondition || !strings.Contains(res[1].GetMessage(), "node default/a") {
		t.Errorf("b: code %v, message %q; want FailedPrecondition naming node a", codes.Code(res[1].GetCode()), res[1].GetMessage())
	}
}

// With read_revision, a node created or changed after that revision is
// refused (ABORTED), not written over; nodes unchanged since are written,
// new ones created.
func TestPutNodesReadRevision(t *testing.T) {
	e := start(t)
	e.image("", "base")
	e.node("kept", "base")
	e.node("changed", "base")
	list, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	read := list.GetRevision()
	// After the client's read: someone changes one node and creates another.
	changed := newNode("changed", "base")
	changed.Metadata.Labels = map[string]string{"by": "someone-else"}
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: changed}); err != nil {
		t.Fatal(err)
	}
	e.node("raced", "base")

	relabel := func(n *sanbootv1.Node) *sanbootv1.Node {
		n.Metadata.Labels = map[string]string{"by": "client"}
		return n
	}
	resp, err := e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{ReadRevision: read, Nodes: []*sanbootv1.Node{
		relabel(newNode("kept", "base")), relabel(newNode("changed", "base")), relabel(newNode("raced", "base")), newNode("new", "base"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		result sanbootv1.PutResult
		code   codes.Code
	}{
		{sanbootv1.PutResult_PUT_RESULT_CONFIGURED, codes.OK},
		{0, codes.Aborted},
		{0, codes.Aborted},
		{sanbootv1.PutResult_PUT_RESULT_CREATED, codes.OK},
	}
	for k, w := range want {
		r := resp.GetResults()[k]
		if r.GetResult() != w.result || codes.Code(r.GetCode()) != w.code {
			t.Errorf("node %d: result %v code %v (%s), want %v %v", k, r.GetResult(), codes.Code(r.GetCode()), r.GetMessage(), w.result, w.code)
		}
	}
	for name, by := range map[string]string{"changed": "someone-else", "raced": ""} {
		n, err := e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if got := n.GetMetadata().GetLabels()["by"]; got != by {
			t.Errorf("node %s: label by=%q, want %q (not written over)", name, got, by)
		}
	}
}

// PutNodes answers an existing, placed node with the status its agent
// reports (read for many nodes at once), whether it found the node by its
// cache or by a failed create.
func TestPutNodesAnswersWithStatus(t *testing.T) {
	e := start(t)
	e.image("", "base")
	a := e.agent("a1", 60, "base")
	for _, name := range []string{"cached", "raced"} {
		if name == "raced" {
			// The API's cache never sees it: PutNodes offers to create it.
			e.hold.Pause()
			defer e.hold.Resume()
		}
		e.node(name, "base")
		e.waitNode(name, func(n *sanbootv1.Node) bool { return n.GetStatus().GetAgent() == "a1" })
		if err := a.Report(e.ctx, api.DefaultProject, name, api.PhaseReady, "serving "+name); err != nil {
			t.Fatal(err)
		}
		e.waitNode(name, phase(api.PhaseReady))
	}
	raced := newNode("raced", "base")
	raced.Metadata.Labels = map[string]string{"k": "v"}
	for _, dry := range []bool{false, true} {
		resp, err := e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{DryRun: dry, Nodes: []*sanbootv1.Node{newNode("cached", "base"), raced}})
		if err != nil {
			t.Fatal(err)
		}
		for k, r := range resp.GetResults() {
			st := r.GetNode().GetStatus()
			if r.GetCode() != 0 || st.GetPhase() != api.PhaseReady || !strings.HasPrefix(st.GetMessage(), "serving ") {
				t.Errorf("dry run %v, node %d: code %d %s, status %v", dry, k, r.GetCode(), r.GetMessage(), st)
			}
		}
	}
}

// A node that exists though the API's cache has not seen it yet is first
// offered a create, whose comparisons fail; it is then read with the
// others and found unchanged (or configured), as PutNode's general path
// decides, and the creates beside it in the transaction are made.
func TestPutNodesCacheBehind(t *testing.T) {
	e := start(t)
	t.Cleanup(e.hold.Resume)
	e.image("", "base")
	e.caughtUp()
	e.hold.Pause()
	e.node("old", "base")
	changed := newNode("changed", "base")
	e.node("changed", "base")
	changed.Metadata.Labels = map[string]string{"rack": "r2"}
	resp, err := e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{Nodes: []*sanbootv1.Node{newNode("new", "base"), newNode("old", "base"), changed}})
	if err != nil {
		t.Fatal(err)
	}
	want := []sanbootv1.PutResult{sanbootv1.PutResult_PUT_RESULT_CREATED, sanbootv1.PutResult_PUT_RESULT_UNCHANGED, sanbootv1.PutResult_PUT_RESULT_CONFIGURED}
	for i, r := range resp.GetResults() {
		if r.GetCode() != 0 || r.GetResult() != want[i] {
			t.Errorf("node %d: %v, want %v", i, r, want[i])
		}
	}
	e.hold.Resume()
}
