package state_test

import (
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

func put(t *testing.T, key string, m proto.Message, rev int64) kv.Event {
	t.Helper()
	v, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return kv.Event{Key: key, Value: v, ModRevision: rev}
}

func TestApply(t *testing.T) {
	s := state.New(slog.New(slog.NewTextHandler(io.Discard, nil)), state.Nodes, state.Assign, state.Alive)
	n1 := state.Ref{Project: "p", Name: "n1"}
	changes := s.Apply(kv.Batch{Revision: 5, Events: []kv.Event{
		put(t, api.NodeKey("p", "n1"), &sanbootv1.Node{Spec: &sanbootv1.NodeSpec{Image: "img"}}, 2),
		put(t, api.AssignKey("a", "p", "n1"), &sanbootv1.Assignment{Generation: 1}, 3),
		put(t, api.AssignKey("a", "p", "n1"), &sanbootv1.Assignment{Generation: 2}, 4), // overwrite: still one
		{Key: api.AliveKey("a"), ModRevision: 5},
		put(t, api.PlacementKey("p", "n1"), &sanbootv1.Placement{}, 5),            // a kind this store does not keep
		{Key: api.NodeKey("p", "bad"), Value: []byte{0xff, 0xff}, ModRevision: 5}, // does not decode
		{Key: api.Prefix + "nodes/too/many/parts", ModRevision: 5},                // does not parse
		{Key: "/elsewhere/x", ModRevision: 5},
	}})
	if s.Revision != 5 {
		t.Fatalf("revision = %d", s.Revision)
	}
	if len(changes) != 5 {
		t.Fatalf("changes = %+v, want node, assign twice, alive, and the undecodable node as deleted", changes)
	}
	if c := changes[4]; c.Kind != state.Nodes || !c.Deleted || c.Ref.Name != "bad" {
		t.Fatalf("undecodable record reported as %+v", c)
	}
	if s.Nodes[n1].ModRevision != 2 || s.Nodes[n1].Msg.Spec.Image != "img" || len(s.Placements) != 0 {
		t.Fatalf("nodes = %v, placements = %v", s.Nodes, s.Placements)
	}
	if a, err := s.Assign[n1]["a"].Assignment(); err != nil || s.AssignCount("a") != 1 || a.GetGeneration() != 2 || !s.IsAlive("a") {
		t.Fatalf("assign count = %d, assign = %v, alive = %v", s.AssignCount("a"), s.Assign, s.Alive)
	}

	// A record that stops decoding is dropped, not kept stale.
	s.Apply(kv.Batch{Revision: 6, Events: []kv.Event{
		{Key: api.AssignKey("a", "p", "n1"), Value: []byte{0xff}, ModRevision: 6},
		{Key: api.AliveKey("a"), Deleted: true, ModRevision: 6},
	}})
	if s.AssignCount("a") != 0 || len(s.Assign) != 0 || s.IsAlive("a") {
		t.Fatalf("after drop: count %d, assign %v, alive %v", s.AssignCount("a"), s.Assign, s.Alive)
	}
}
