package view_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
	"github.com/sanboot/sanboot/internal/kv"
)

// store builds a store from key -> record.
func store(t *testing.T, records map[string]proto.Message) *state.Store {
	t.Helper()
	s := state.New(slog.New(slog.NewTextHandler(io.Discard, nil)), state.Nodes, state.Placements, state.NodeStatus,
		state.Alive, state.Agents, state.Images, state.Replicas, state.Assign)
	b := kv.Batch{Revision: 100}
	rev := int64(1)
	for k, m := range records {
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		b.Events = append(b.Events, kv.Event{Key: k, Value: v, ModRevision: rev})
		rev++
	}
	s.Apply(b)
	return s
}

func node(deleting bool) *sanbootv1.Node {
	n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Generation: 2}, Spec: &sanbootv1.NodeSpec{Image: "img"}}
	if deleting {
		n.Metadata.DeleteTime = timestamppb.Now()
	}
	return n
}

var (
	nodeKey   = api.NodeKey("p", "n1")
	placeKey  = api.PlacementKey("p", "n1")
	statusKey = api.NodeStatusKey("p", "n1", "a")
	aliveA    = api.AliveKey("a")
	placedOnA = &sanbootv1.Placement{Agent: "a", Reason: api.ReasonScheduled}
	ready     = &sanbootv1.NodeStatus{Phase: api.PhaseReady, Agent: "a", TargetIqn: "iqn.x", Portals: []string{"127.0.0.1:3260"}, ObservedGeneration: 2,
		Sessions: []*sanbootv1.TargetSession{{Initiator: "iqn.y", Address: "10.99.0.2"}}}
	empty = &sanbootv1.AgentRecord{}
)

func TestNodeStatus(t *testing.T) {
	tests := []struct {
		name      string
		records   map[string]proto.Message
		phase     string
		msg       string // a part of the message
		scheduled bool
		available bool
	}{
		{"not yet scheduled", map[string]proto.Message{nodeKey: node(false)},
			api.PhasePending, "waiting for the scheduler", false, false},
		{"unschedulable", map[string]proto.Message{nodeKey: node(false), placeKey: &sanbootv1.Placement{Reason: api.ReasonNoAgent, Message: `no Ready agent holds image "img"`}},
			api.PhasePending, `no Ready agent holds image "img"`, false, false},
		{"placed, no report yet", map[string]proto.Message{nodeKey: node(false), placeKey: placedOnA, aliveA: empty},
			api.PhasePending, `placed on agent "a"; waiting for it to report`, true, true},
		{"ready", map[string]proto.Message{nodeKey: node(false), placeKey: placedOnA, aliveA: empty, statusKey: ready},
			api.PhaseReady, "", true, true},
		{"agent lease expired", map[string]proto.Message{nodeKey: node(false), placeKey: placedOnA, statusKey: ready},
			api.PhaseUnavailable, `agent "a" is unavailable (lease expired); the node's disk lives there`, true, false},
		{"agent alive, its tgtd down", map[string]proto.Message{nodeKey: node(false), placeKey: placedOnA, aliveA: empty,
			statusKey:         &sanbootv1.NodeStatus{Phase: api.PhaseUnavailable, Agent: "a", Message: "the managed tgtd died"},
			api.AgentKey("a"): &sanbootv1.AgentRecord{Problem: "the managed tgtd died"}},
			api.PhaseUnavailable, "the managed tgtd died", true, false},
		{"agent stopped, targets kept serving", map[string]proto.Message{nodeKey: node(false), placeKey: placedOnA, statusKey: ready,
			api.AgentKey("a"): &sanbootv1.AgentRecord{TargetsKept: true, StopTime: timestamppb.Now()}},
			api.PhaseReady, `agent "a" stopped at`, true, false},
		{"agent stopped, targets kept, node was not Ready", map[string]proto.Message{nodeKey: node(false), placeKey: placedOnA,
			statusKey:         &sanbootv1.NodeStatus{Phase: api.PhaseFailed, Agent: "a"},
			api.AgentKey("a"): &sanbootv1.AgentRecord{TargetsKept: true, StopTime: timestamppb.Now()}},
			api.PhaseUnavailable, "lease expired", true, false},
		{"deleting, never placed", map[string]proto.Message{nodeKey: node(true)},
			api.PhaseDeleting, "never placed", false, false},
		{"deleting", map[string]proto.Message{nodeKey: node(true), placeKey: placedOnA, aliveA: empty, statusKey: ready},
			api.PhaseDeleting, `waiting for agent "a" to tear down`, true, true},
		{"deleting, agent down", map[string]proto.Message{nodeKey: node(true), placeKey: placedOnA, statusKey: ready},
			api.PhaseDeleting, "which is unavailable", true, false},
		{"deleted by the agent", map[string]proto.Message{nodeKey: node(true), placeKey: placedOnA, aliveA: empty,
			statusKey: &sanbootv1.NodeStatus{Phase: api.PhaseDeleted}}, api.PhaseDeleting, "has torn the node down", true, true},
		// The node moved from b to a: b's report is not a's.
		{"only the placed agent's status counts", map[string]proto.Message{nodeKey: node(false), placeKey: placedOnA, aliveA: empty,
			api.NodeStatusKey("p", "n1", "b"): ready}, api.PhasePending, `placed on agent "a"; waiting for it to report`, true, true},
		{"a status with no placement", map[string]proto.Message{nodeKey: node(false), statusKey: ready},
			api.PhasePending, "waiting for the scheduler", false, false},
		{"pin ignored", map[string]proto.Message{nodeKey: node(false), aliveA: empty, statusKey: ready,
			placeKey: &sanbootv1.Placement{Agent: "a", Reason: api.ReasonPinIgnored, Message: "the disk lives on a"}}, api.PhaseReady, "", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := view.Node(store(t, tt.records), state.Ref{Project: "p", Name: "n1"})
			st := n.GetStatus()
			if st.GetPhase() != tt.phase || !strings.Contains(st.GetMessage(), tt.msg) {
				t.Fatalf("status = %v, want phase %s and a message with %q", st, tt.phase, tt.msg)
			}
			c := st.GetConditions()
			if len(c) != 3 || c[0].Type != api.ConditionScheduled || c[0].Status != tt.scheduled ||
				c[1].Type != api.ConditionAgentAvailable || c[1].Status != tt.available ||
				c[2].Type != api.ConditionReady || c[2].Status != (tt.phase == api.PhaseReady) {
				t.Fatalf("conditions = %v", c)
			}
			if n.Metadata.Project != "p" || n.Metadata.Name != "n1" || n.Metadata.Revision == 0 {
				t.Fatalf("metadata = %v: project and name come from the key, revision from etcd", n.Metadata)
			}
			if tt.name == "pin ignored" && (c[0].Reason != api.ReasonPinIgnored || !strings.Contains(c[0].Message, "the disk lives on a")) {
				t.Fatalf("scheduled condition = %v", c[0])
			}
			if tt.name == "ready" && (st.TargetIqn != "iqn.x" || st.Portals[0] != "127.0.0.1:3260" || st.ObservedGeneration != 2 || st.Agent != "a") {
				t.Fatalf("reported fields not copied: %v", st)
			}
			if tt.name == "ready" && (len(st.Sessions) != 1 || st.Sessions[0].GetInitiator() != "iqn.y" || st.Sessions[0].GetAddress() != "10.99.0.2") {
				t.Fatalf("sessions not copied: %v", st)
			}
			if !tt.available && len(st.Sessions) != 0 {
				t.Fatalf("sessions of an agent that is gone are shown: %v", st)
			}
		})
	}
	if view.Node(store(t, nil), state.Ref{Project: "p", Name: "n1"}) != nil {
		t.Fatal("a view of a node that does not exist")
	}
}

func TestImagePhase(t *testing.T) {
	img := func(agents ...string) *sanbootv1.Image {
		return &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{}, Spec: &sanbootv1.ImageSpec{SizeBytes: 512, Agents: agents}}
	}
	rep := func(phase string) *sanbootv1.ImageReplica {
		return &sanbootv1.ImageReplica{Phase: phase, Sha256: "sum-" + phase}
	}
	imKey := api.ImageKey("p", "img")
	tests := []struct {
		name    string
		records map[string]proto.Message
		want    string
	}{
		{"no agents", map[string]proto.Message{imKey: img()}, api.ReplicaPending},
		{"every live agent has it", map[string]proto.Message{imKey: img(), api.AgentKey("a"): empty, aliveA: empty, api.AgentKey("b"): empty,
			api.ReplicaKey("p", "img", "a"): rep("Ready")}, api.ReplicaReady},
		{"a live agent lacks it", map[string]proto.Message{imKey: img(), api.AgentKey("a"): empty, aliveA: empty,
			api.AgentKey("b"): empty, api.AliveKey("b"): empty, api.ReplicaKey("p", "img", "a"): rep("Ready")}, api.ReplicaPending},
		{"only the named agents count", map[string]proto.Message{imKey: img("a"), api.AgentKey("a"): empty, aliveA: empty,
			api.AgentKey("b"): empty, api.AliveKey("b"): empty, api.ReplicaKey("p", "img", "a"): rep("Ready")}, api.ReplicaReady},
		{"failed", map[string]proto.Message{imKey: img(), api.AgentKey("a"): empty, aliveA: empty, api.ReplicaKey("p", "img", "a"): rep("Failed")}, api.ReplicaFailed},
		{"every agent down, a copy exists", map[string]proto.Message{imKey: img(), api.AgentKey("a"): empty, api.ReplicaKey("p", "img", "a"): rep("Ready")}, api.ReplicaReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im := view.Image(store(t, tt.records), state.Ref{Project: "p", Name: "img"}, []string{"n1"})
			if im.Status.Phase != tt.want {
				t.Fatalf("phase = %s, want %s (%v)", im.Status.Phase, tt.want, im.Status)
			}
			if im.Status.UsedBy[0] != "n1" {
				t.Fatalf("used_by = %v", im.Status.UsedBy)
			}
			for _, r := range im.Status.Replicas {
				if r.Agent == "" {
					t.Fatalf("replica without its agent: %v", r)
				}
			}
		})
	}
}

func TestAgentsAndUsedBy(t *testing.T) {
	s := store(t, map[string]proto.Message{
		api.AgentKey("a"): &sanbootv1.AgentRecord{Driver: "tgt"}, aliveA: empty,
		api.AgentKey("b"):             empty,
		api.AssignKey("a", "p", "n1"): &sanbootv1.Assignment{}, api.AssignKey("a", "p", "n2"): &sanbootv1.Assignment{},
		api.NodeKey("p", "n2"): node(false), api.NodeKey("p", "n1"): node(false), api.NodeKey("q", "n3"): node(false),
	})
	agents := view.Agents(s)
	if len(agents) != 2 || agents[0].Record.Name != "a" || agents[0].State != api.AgentReady || agents[0].Nodes != 2 || agents[0].Record.Driver != "tgt" ||
		agents[1].Record.Name != "b" || agents[1].State != api.AgentUnavailable || agents[1].Nodes != 0 {
		t.Fatalf("agents = %v", agents)
	}
	used := view.UsedBy(s)
	if got := used[state.Ref{Project: "p", Name: "img"}]; len(got) != 2 || got[0] != "n1" || got[1] != "n2" {
		t.Fatalf("used by in p = %v", got)
	}
	if got := used[state.Ref{Project: "q", Name: "img"}]; len(got) != 1 {
		t.Fatalf("used by in q = %v", got)
	}
}

// An agent whose lease is alive but whose record reports a problem (its
// tgtd is down) is NotReady with that problem as its message.
func TestAgentWithAProblemIsNotReady(t *testing.T) {
	const why = "the managed tgtd died (signal: killed)"
	s := store(t, map[string]proto.Message{
		api.AgentKey("a"): &sanbootv1.AgentRecord{Driver: "tgt", Problem: why}, aliveA: empty,
	})
	a := view.Agent(s, "a")
	if a.State != api.AgentNotReady || a.Message != why {
		t.Fatalf("agent = %v; want NotReady saying %q", a, why)
	}
}

// A node's view shares its spec and labels with the store's record but
// not its metadata: what the view's own fields say never reaches the
// store.
func TestNodeViewKeepsTheStoreIntact(t *testing.T) {
	n := node(false)
	n.Metadata.Labels = map[string]string{"rack": "r1"}
	s := store(t, map[string]proto.Message{nodeKey: n, placeKey: placedOnA, statusKey: ready, aliveA: empty})
	v := view.Node(s, state.Ref{Project: "p", Name: "n1"})
	rec := s.Nodes[state.Ref{Project: "p", Name: "n1"}].Msg
	if v.GetMetadata().GetLabels()["rack"] != "r1" || v.GetSpec().GetImage() != "img" || v.GetMetadata().GetName() != "n1" {
		t.Fatalf("view %v lacks the record's labels, spec or name", v)
	}
	before := proto.CloneOf(rec)
	v.Metadata.Name, v.Metadata.Revision, v.Metadata.Generation = "other", 99, 7
	v.Status.Message = "changed"
	if !proto.Equal(rec, before) {
		t.Fatalf("changing the view's own fields changed the store's record: %v, was %v", rec, before)
	}
	if again := view.Node(s, state.Ref{Project: "p", Name: "n1"}); again.GetMetadata().GetName() != "n1" || again.GetStatus().GetMessage() == "changed" {
		t.Fatalf("a later view shows an earlier view's changes: %v", again)
	}
}

// A node's failover agents are the other Ready agents of its agent's
// storage domain: not the dead, not one with a problem, not another
// domain's; none for an agent in no domain, nor for a deleting node.
func TestFailoverAgents(t *testing.T) {
	const d = "rbd:fsid/pool"
	records := map[string]proto.Message{
		nodeKey: node(false), placeKey: placedOnA, statusKey: ready, aliveA: empty,
		api.AgentKey("a"): &sanbootv1.AgentRecord{StorageDomain: d},
		api.AgentKey("c"): &sanbootv1.AgentRecord{StorageDomain: d}, api.AliveKey("c"): empty,
		api.AgentKey("b"): &sanbootv1.AgentRecord{StorageDomain: d}, api.AliveKey("b"): empty,
		api.AgentKey("dead"): &sanbootv1.AgentRecord{StorageDomain: d},
		api.AgentKey("sick"): &sanbootv1.AgentRecord{StorageDomain: d, Problem: "tgtd is down"}, api.AliveKey("sick"): empty,
		api.AgentKey("other"): &sanbootv1.AgentRecord{StorageDomain: "rbd:fsid/other"}, api.AliveKey("other"): empty,
		api.AgentKey("local"): &sanbootv1.AgentRecord{}, api.AliveKey("local"): empty,
	}
	ref := state.Ref{Project: "p", Name: "n1"}
	if got := view.Node(store(t, records), ref).GetStatus().GetFailoverAgents(); strings.Join(got, ",") != "b,c" {
		t.Errorf("failover agents = %v, want [b c]", got)
	}
	// Its agent dead: still where it could go (and where it goes).
	delete(records, aliveA)
	if got := view.Node(store(t, records), ref).GetStatus().GetFailoverAgents(); strings.Join(got, ",") != "b,c" {
		t.Errorf("failover agents with the agent dead = %v, want [b c]", got)
	}
	records[nodeKey] = node(true)
	if got := view.Node(store(t, records), ref).GetStatus().GetFailoverAgents(); len(got) != 0 {
		t.Errorf("a deleting node has failover agents %v", got)
	}
	records[nodeKey] = node(false)
	records[api.AgentKey("a")] = &sanbootv1.AgentRecord{}
	if got := view.Node(store(t, records), ref).GetStatus().GetFailoverAgents(); len(got) != 0 {
		t.Errorf("a node of an agent in no domain has failover agents %v", got)
	}
	if got := view.FailoverAgents(store(t, records), ""); got != nil {
		t.Errorf("an unplaced node has failover agents %v", got)
	}
}

// TestNodesFilters: Nodes returns, sorted, the views of the nodes a filter
// selects — the same views Node gives — whatever the filter reads.
func TestNodesFilters(t *testing.T) {
	labelled := func(rack string) *sanbootv1.Node {
		return &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Generation: 1, Labels: map[string]string{"rack": rack}}, Spec: &sanbootv1.NodeSpec{Image: "img"}}
	}
	s := store(t, map[string]proto.Message{
		api.NodeKey("p", "b"): labelled("r1"), api.NodeKey("p", "a"): labelled("r2"), api.NodeKey("q", "a"): labelled("r1"),
		api.PlacementKey("p", "a"): placedOnA, api.NodeStatusKey("p", "a", "a"): ready, aliveA: empty,
	})
	r1, err := api.ParseSelector("rack=r1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		filter view.NodeFilter
		want   []state.Ref
	}{
		{"a project", view.NodeFilter{Project: "p"}, []state.Ref{{Project: "p", Name: "a"}, {Project: "p", Name: "b"}}},
		{"all projects", view.NodeFilter{AllProjects: true}, []state.Ref{{Project: "p", Name: "a"}, {Project: "p", Name: "b"}, {Project: "q", Name: "a"}}},
		{"names", view.NodeFilter{Project: "p", Names: map[string]bool{"a": true}}, []state.Ref{{Project: "p", Name: "a"}}},
		{"labels", view.NodeFilter{AllProjects: true, Selector: r1}, []state.Ref{{Project: "p", Name: "b"}, {Project: "q", Name: "a"}}},
		{"none", view.NodeFilter{Project: "r"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := view.Nodes(s, tc.filter)
			if len(got) != len(tc.want) {
				t.Fatalf("%d nodes, want %d: %v", len(got), len(tc.want), got)
			}
			for i, ref := range tc.want {
				if want := view.Node(s, ref); !proto.Equal(got[i], want) {
					t.Errorf("node %d:\n%v\nwant\n%v", i, got[i], want)
				}
			}
		})
	}
}
