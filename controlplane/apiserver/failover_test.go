package apiserver_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

// A node of a storage domain shows where it could fail over (the other
// Ready agents of the domain) in GetNode and ListNodes, which follow the
// agents' liveness, and its boot script names their portals.
func TestFailoverAgentsOfANode(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	a, b := e.agent("a", 10, "img"), e.agent("b", 10, "img")
	for name, portal := range map[string]string{"a": "127.0.0.1:3260", "b": "127.0.0.2:3260"} {
		var rec sanbootv1.AgentRecord
		rev, err := kv.Get(e.ctx, e.cli, api.AgentKey(name), &rec)
		if err != nil {
			t.Fatal(err)
		}
		rec.StoreKind, rec.StorageDomain, rec.Portals = "rbd", "rbd:fsid/pool", []string{portal}
		if _, err := kv.CAS(e.ctx, e.cli, api.AgentKey(name), rev, &rec); err != nil {
			t.Fatal(err)
		}
	}
	n := newNode("n1", "img")
	n.Spec.Agent = "a"
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
		t.Fatal(err)
	}
	go a.Serve(e.ctx, e.log)
	failover := func(want ...string) func(*sanbootv1.Node) bool {
		return func(n *sanbootv1.Node) bool {
			return n.GetStatus().GetPhase() == api.PhaseReady && slices.Equal(n.GetStatus().GetFailoverAgents(), want)
		}
	}
	e.waitNode("n1", failover("b"))
	listed := func(want ...string) bool {
		resp, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{})
		return err == nil && len(resp.GetNodes()) == 1 && failover(want...)(resp.GetNodes()[0])
	}
	eventually.True(t, "ListNodes to show failover agent b", func() bool { return listed("b") }, eventually.Seen(func() string { return "not yet" }))
	got, err := e.api.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	want := "sanboot iscsi:127.0.0.2::3260:0:" + api.TargetIQN("", "default", "n1") + " || goto sanboot-retry"
	if !strings.Contains(got.Script, want) || !strings.Contains(got.Script, "goto sanboot-failover") {
		t.Errorf("boot script lacks b's portal as the failover path (%q):\n%s", want, got.Script)
	}

	// b dies: n1 has nowhere to go, in GetNode, in the list and in a
	// watch (the API's cache recomputes the nodes of b's domain).
	w := e.watch(&sanbootv1.WatchNodesRequest{})
	w.until("n1 with failover agent b", func(ev *sanbootv1.NodeEvent) bool { return failover("b")(ev.GetNode()) })
	if err := b.Revoke(e.ctx); err != nil {
		t.Fatal(err)
	}
	w.until("n1 without failover agents", func(ev *sanbootv1.NodeEvent) bool { return failover()(ev.GetNode()) })
	e.waitNode("n1", failover())
	eventually.True(t, "ListNodes to drop the dead b", func() bool { return listed() }, eventually.Seen(func() string { return "still listed" }))
	got, err = e.api.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil || strings.Contains(got.Script, "127.0.0.2") || strings.Contains(got.Script, "sanboot-failover") {
		t.Errorf("boot script with b dead (%v):\n%s", err, got.GetScript())
	}
}
