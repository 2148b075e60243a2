package apiserver_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
)

// TestListNodeEvents: the API server derives a node's events from the
// changes its watch cache sees (real etcd, real scheduler, an agent played
// by fakeagent): created, unschedulable, scheduled, the agent's phases,
// deletion; repeats are counted, and the events go with the node.
func TestListNodeEvents(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	e.node("n1", "img")
	e.waitNode("n1", func(n *sanbootv1.Node) bool { return strings.Contains(n.GetStatus().GetMessage(), "img") })
	a := e.agent("a", 30, "img")
	e.waitNode("n1", func(n *sanbootv1.Node) bool { return n.GetStatus().GetAgent() == "a" })
	for _, p := range []string{api.PhaseProvisioning, api.PhaseReady} {
		if err := a.Report(e.ctx, "default", "n1", p, ""); err != nil {
			t.Fatal(err)
		}
		e.waitNode("n1", phase(p))
	}
	var events []*sanbootv1.Event
	eventually.True(t, "events up to Ready", func() bool {
		resp, err := e.api.ListNodeEvents(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		events = resp.GetEvents()
		return len(events) > 0 && events[len(events)-1].GetReason() == api.PhaseReady
	}, eventually.Seen(func() string { return eventsString(events) }))
	got := eventsString(events)
	for _, want := range []string{
		`Normal Created node created from image "img" (generation 1)`,
		`Warning Pending phase Pending: no Ready agent holds image "img"`,
		`Normal Scheduled placed on agent "a"`,
		`Normal Provisioning phase Provisioning`,
		`Normal Ready phase Ready`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("events lack %q:\n%s", want, got)
		}
	}
	if _, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "DeletionRequested", func() bool {
		resp, _ := e.api.ListNodeEvents(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
		events = resp.GetEvents()
		return strings.Contains(eventsString(events), "DeletionRequested")
	}, eventually.Seen(func() string { return eventsString(events) }))

	_, err := e.api.ListNodeEvents(e.ctx, &sanbootv1.GetRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, "nope")
}

func eventsString(events []*sanbootv1.Event) string {
	var b strings.Builder
	for _, ev := range events {
		b.WriteString(ev.GetType() + " " + ev.GetReason() + " " + ev.GetMessage() + "\n")
	}
	return b.String()
}
