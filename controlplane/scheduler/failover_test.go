package scheduler_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

// inDomain writes the agent's record with a storage domain, as an agent
// with a shared store (RBD) registers.
func (e *env) inDomain(a *fakeagent.Agent, domain string) {
	e.t.Helper()
	var rec sanbootv1.AgentRecord
	rev, err := kv.Get(e.ctx, e.cli, api.AgentKey(a.Name), &rec)
	if err != nil {
		e.t.Fatal(err)
	}
	rec.StoreKind, rec.StorageDomain = "rbd", domain
	if _, err := kv.CAS(e.ctx, e.cli, api.AgentKey(a.Name), rev, &rec); err != nil {
		e.t.Fatal(err)
	}
}

// TestFailoverWithinStorageDomain: a node whose agent's lease expires
// moves to a live agent of the same storage domain (never to one outside
// it), its old assignment goes in the same step, and it stays when the old
// agent returns. A node on an agent without a domain waits for it.
func TestFailoverWithinStorageDomain(t *testing.T) {
	e := start(t)
	const domain = "rbd:6f1c2a9e-0b7d-4c55-9d0e-2f4b1e8a7c31/sanboot"
	a, b := e.agent("a", "Ready"), e.agent("b", "Ready")
	c, d := e.agent("c", "Ready"), e.agent("d", "Ready")
	e.inDomain(a, domain)
	e.inDomain(b, domain)
	e.inDomain(d, "rbd:6f1c2a9e-0b7d-4c55-9d0e-2f4b1e8a7c31/other")
	e.putNode("n1", &sanbootv1.NodeSpec{Image: image, Agent: "a"})
	e.putNode("n2", &sanbootv1.NodeSpec{Image: image, Agent: "c"})
	e.waitPlacement("n1", func(p *sanbootv1.Placement) bool { return p.Agent == "a" })
	e.waitPlacement("n2", func(p *sanbootv1.Placement) bool { return p.Agent == "c" })

	if err := a.Revoke(e.ctx); err != nil { // a's lease is gone: a crash
		t.Fatal(err)
	}
	if err := c.Revoke(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.waitPlacement("n1", func(p *sanbootv1.Placement) bool { return p.Agent == "b" })
	asg, err := e.assignment("b", "n1")
	if err != nil || asg.GetNode() != "n1" {
		t.Fatalf("assignment of n1 on b: %v, %v", asg, err)
	}
	if _, err := e.assignment("a", "n1"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("n1's assignment on the dead agent a: %v, want it gone", err)
	}
	if _, err := e.assignment("d", "n1"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("n1 assigned to d, an agent of another domain: %v", err)
	}

	if err := a.Alive(e.ctx, 10); err != nil { // a comes back
		t.Fatal(err)
	}
	e.updateNode("n2", func(n *sanbootv1.Node) { n.Spec.Macs = []string{"52:54:00:00:00:02"} }) // a later pass
	e.waitPlacement("n2", func(p *sanbootv1.Placement) bool { return p.Generation == 2 })
	if p := e.waitPlacement("n1", placedOn); p.Agent != "b" {
		t.Errorf("n1 went back to %q when a returned, want it to stay on b", p.Agent)
	}
	if p := e.waitPlacement("n2", placedOn); p.Agent != "c" {
		t.Errorf("n2 (agent c, no storage domain) moved to %q, want it to wait for c", p.Agent)
	}
	if _, err := e.assignment("a", "n1"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("n1 assigned to a again: %v", err)
	}
}

// TestTeardownOfADeadAgentsNodeMovesInItsDomain: a node deleted whose
// agent dies before it tore the node down is handed, deleting, to a live
// agent of the storage domain (which removes its disk from the shared
// store), and its records go once that agent has torn it down. Its image
// need not exist any more.
func TestTeardownOfADeadAgentsNodeMovesInItsDomain(t *testing.T) {
	e := start(t)
	const domain = "rbd:6f1c2a9e-0b7d-4c55-9d0e-2f4b1e8a7c31/sanboot"
	a, b := e.agent("a", "Ready"), e.agent("b", "Ready")
	e.inDomain(a, domain)
	e.inDomain(b, domain)
	e.putNode("n1", &sanbootv1.NodeSpec{Image: image, Agent: "a"})
	e.waitPlacement("n1", func(p *sanbootv1.Placement) bool { return p.Agent == "a" })
	e.updateNode("n1", func(n *sanbootv1.Node) { n.Metadata.DeleteTime = timestamppb.Now() })
	e.waitDeleting("a", "n1")
	if _, err := e.cli.Delete(e.ctx, api.ImageKey(project, image)); err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(e.ctx); err != nil { // a dies before it tore n1 down
		t.Fatal(err)
	}
	e.waitDeleting("b", "n1")
	e.waitPlacement("n1", func(p *sanbootv1.Placement) bool { return p.Agent == "b" })
	if _, err := e.assignment("a", "n1"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("n1's assignment on the dead agent a: %v, want it gone", err)
	}
	if err := b.Report(e.ctx, project, "n1", api.PhaseDeleted, ""); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the node's records to go", func() bool {
		return e.count(api.Prefix+"nodes/")+e.count(api.Prefix+"placements/")+e.count(api.AssignPrefix("")) == 0
	}, eventually.Seen(func() string { return "records remain" }))
}
