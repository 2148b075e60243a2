package apiserver

import (
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
	"github.com/sanboot/sanboot/internal/kv"
)

// TestCacheComputesViewsOnDemand: the cache no longer holds the nodes'
// views, and answers as it did when it held them: a watcher gets an event
// exactly when a node's view changed, carrying the view as it is now (and,
// for a node that went, the last view it had), the change hook sees the
// parts of the old view it reads (metadata, phase, message, agent), and
// a watch's first list is every node's view.
func TestCacheComputesViewsOnDemand(t *testing.T) {
	node := func(labels map[string]string, deleting bool) *sanbootv1.Node {
		n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Generation: 1, Labels: labels}, Spec: &sanbootv1.NodeSpec{Image: "img"}}
		if deleting {
			n.Metadata.DeleteTime = timestamppb.New(timestamppb.Now().AsTime())
		}
		return n
	}
	status := func(phase, msg string) *sanbootv1.NodeStatus {
		return &sanbootv1.NodeStatus{Phase: phase, Message: msg, Agent: "a", TargetIqn: "iqn.x", Portals: []string{"127.0.0.1:3260"}, ObservedGeneration: 1}
	}
	put := func(key string, m proto.Message) kv.Event {
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return kv.Event{Key: key, Value: v}
	}
	del := func(key string) kv.Event { return kv.Event{Key: key, Deleted: true} }
	n1, n2 := state.Ref{Project: "p", Name: "n1"}, state.Ref{Project: "p", Name: "n2"}
	steps := []struct {
		name   string
		events []kv.Event
		// changed are the nodes whose view changes in this step.
		changed []state.Ref
	}{
		{"agent registers", []kv.Event{put(api.AgentKey("a"), &sanbootv1.AgentRecord{}), put(api.AliveKey("a"), &sanbootv1.AgentRecord{})}, nil},
		{"two nodes created", []kv.Event{put(api.NodeKey("p", "n1"), node(map[string]string{"rack": "r1"}, false)),
			put(api.NodeKey("p", "n2"), node(map[string]string{"rack": "r2"}, false))}, []state.Ref{n1, n2}},
		{"n1 placed", []kv.Event{put(api.PlacementKey("p", "n1"), &sanbootv1.Placement{Agent: "a", Reason: api.ReasonScheduled})}, []state.Ref{n1}},
		{"n1 reported Pending", []kv.Event{put(api.NodeStatusKey("p", "n1", "a"), status(api.PhasePending, "cloning"))}, []state.Ref{n1}},
		{"n1 reported Pending again, unchanged", []kv.Event{put(api.NodeStatusKey("p", "n1", "a"), status(api.PhasePending, "cloning"))}, nil},
		{"n1 Ready", []kv.Event{put(api.NodeStatusKey("p", "n1", "a"), status(api.PhaseReady, "serving"))}, []state.Ref{n1}},
		{"n1 relabelled", []kv.Event{put(api.NodeKey("p", "n1"), node(map[string]string{"rack": "r9"}, false))}, []state.Ref{n1}},
		{"agent's lease lost", []kv.Event{del(api.AliveKey("a"))}, []state.Ref{n1}},
		{"agent back", []kv.Event{put(api.AliveKey("a"), &sanbootv1.AgentRecord{})}, []state.Ref{n1}},
		{"n1 deletion requested", []kv.Event{put(api.NodeKey("p", "n1"), node(map[string]string{"rack": "r9"}, true))}, []state.Ref{n1}},
		{"n1 torn down", []kv.Event{put(api.NodeStatusKey("p", "n1", "a"), status(api.PhaseDeleted, "gone"))}, []state.Ref{n1}},
		{"n1's records removed", []kv.Event{del(api.NodeStatusKey("p", "n1", "a")), del(api.PlacementKey("p", "n1")), del(api.NodeKey("p", "n1"))}, []state.Ref{n1}},
		{"n2 removed without a deletion first", []kv.Event{del(api.NodeKey("p", "n2"))}, []state.Ref{n2}},
	}

	rack9Selector, err := api.ParseSelector("rack=r9")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := newCache(informer.New(nil, log), nil, log, 100)
	type change struct{ old, cur *sanbootv1.Node }
	var seen []change
	c.onChange = func(old, cur *sanbootv1.Node) { seen = append(seen, change{old, cur}) }
	all := &subscriber{filter: view.NodeFilter{AllProjects: true}, events: make(chan *sanbootv1.NodeEvent, 100), dropped: make(chan struct{})}
	rack9 := &subscriber{filter: view.NodeFilter{Project: "p", Selector: rack9Selector}, events: make(chan *sanbootv1.NodeEvent, 100), dropped: make(chan struct{})}
	c.subs[all], c.subs[rack9] = struct{}{}, struct{}{}

	// before holds the whole views, as the cache did before.
	before := map[state.Ref]*sanbootv1.Node{}
	rev := int64(1)
	for _, step := range steps {
		for i := range step.events {
			step.events[i].ModRevision = rev
			rev++
		}
		seen = nil
		c.handle(informer.Update{Store: c.store, Changes: c.store.Apply(kv.Batch{Events: step.events, Revision: rev})})

		if len(seen) != len(step.changed) {
			t.Fatalf("%s: %d changes, want %d (%v)", step.name, len(seen), len(step.changed), step.changed)
		}
		for i, ref := range step.changed {
			old, cur, want := seen[i].old, seen[i].cur, view.Node(c.store, ref)
			if !proto.Equal(cur, want) {
				t.Errorf("%s: %v: the new view\n%v\nwant\n%v", step.name, ref, cur, want)
			}
			prev := before[ref]
			if (old == nil) != (prev == nil) {
				t.Fatalf("%s: %v: old view %v, want %v", step.name, ref, old, prev)
			}
			if prev != nil {
				if !proto.Equal(old.GetMetadata(), prev.GetMetadata()) || !proto.Equal(old.GetSpec(), prev.GetSpec()) ||
					old.GetStatus().GetPhase() != prev.GetStatus().GetPhase() || old.GetStatus().GetMessage() != prev.GetStatus().GetMessage() ||
					old.GetStatus().GetAgent() != prev.GetStatus().GetAgent() {
					t.Errorf("%s: %v: old view\n%v\nwant (its metadata, spec, phase, message and agent)\n%v", step.name, ref, old, prev)
				}
				if prev.GetMetadata().GetDeleteTime() != nil && !proto.Equal(old, prev) {
					t.Errorf("%s: %v: the old view of a node being deleted\n%v\nwant all of it\n%v", step.name, ref, old, prev)
				}
			}
			// What watchers get, as before: the events offer makes of the
			// old and the new view.
			for _, sub := range []*subscriber{all, rack9} {
				var want *sanbootv1.NodeEvent
				held := &subscriber{filter: sub.filter, events: make(chan *sanbootv1.NodeEvent, 1), dropped: make(chan struct{})}
				held.offer(prev, cur, c.store.Revision)
				select {
				case want = <-held.events:
				default:
				}
				var got *sanbootv1.NodeEvent
				select {
				case got = <-sub.events:
				default:
				}
				if cur == nil && prev.GetMetadata().GetDeleteTime() == nil && got != nil && want != nil {
					// A node whose records went before its view showed a
					// deletion: its DELETED event carries the metadata,
					// spec, phase, message and agent it last had.
					ws := want.Node.Status
					want.Node.Status = &sanbootv1.NodeStatus{Phase: ws.GetPhase(), Message: ws.GetMessage(), Agent: ws.GetAgent()}
				}
				if !proto.Equal(got, want) {
					t.Errorf("%s: %v: watcher of %v got\n%v\nwant\n%v", step.name, ref, sub.filter, got, want)
				}
			}
			if cur == nil {
				delete(before, ref)
			} else {
				before[ref] = cur
			}
		}
		for _, sub := range []*subscriber{all, rack9} {
			select {
			case ev := <-sub.events:
				t.Errorf("%s: an event of no change: %v", step.name, ev)
			default:
			}
		}
		// A watch's first list: every node's view, as the cache held them.
		c.lock()
		snapshot := c.list(view.NodeFilter{AllProjects: true})
		c.unlock()
		if len(snapshot) != len(before) {
			t.Errorf("%s: first list of %d nodes, want %d", step.name, len(snapshot), len(before))
		}
		for _, n := range snapshot {
			ref := state.Ref{Project: n.GetMetadata().GetProject(), Name: n.GetMetadata().GetName()}
			if !proto.Equal(n, before[ref]) {
				t.Errorf("%s: first list: %v\nwant\n%v", step.name, n, before[ref])
			}
		}
	}
}
