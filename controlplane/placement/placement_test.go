package placement_test

import (
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/placement"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

const project, image = "default", "img"

// agent is an agent's records: registered, alive unless dead, and its
// replica of img in phase replica (none when "").
type agent struct {
	name, replica string
	dead          bool
}

func store(t *testing.T, agents ...agent) *state.Store {
	t.Helper()
	st := state.New(slog.New(slog.DiscardHandler), state.Agents, state.Alive, state.Replicas)
	var b kv.Batch
	add := func(key string, msg proto.Message) {
		v, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		b.Revision++
		b.Events = append(b.Events, kv.Event{Key: key, Value: v, ModRevision: b.Revision})
	}
	for _, a := range agents {
		add(api.AgentKey(a.name), &sanbootv1.AgentRecord{Name: a.name})
		if !a.dead {
			add(api.AliveKey(a.name), &sanbootv1.AgentRecord{})
		}
		if a.replica != "" {
			add(api.ReplicaKey(project, image, a.name), &sanbootv1.ImageReplica{Phase: a.replica})
		}
	}
	st.Apply(b)
	return st
}

func node(pin string) *sanbootv1.Node {
	return &sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: project, Name: "n1", Generation: 1},
		Spec:     &sanbootv1.NodeSpec{Image: image, Agent: pin},
	}
}

// Choose and Forced on the same stores: Forced names an agent exactly
// when Choose's pick cannot depend on the loads, and then it is Choose's
// pick under any loads.
func TestChooseAndForced(t *testing.T) {
	ready := func(name string) agent { return agent{name: name, replica: api.ReplicaReady} }
	tests := []struct {
		name   string
		agents []agent
		pin    string
		// choose is Choose's pick with a's load 5 and every other 0;
		// forced is Forced's answer; reason is Choose's when it picks none.
		choose, forced, reason string
	}{
		{name: "the only agent holding the image", agents: []agent{ready("a"), {name: "b", replica: api.ReplicaPending}, {name: "c"}}, choose: "a", forced: "a"},
		{name: "two agents hold it: the loads decide", agents: []agent{ready("a"), ready("b")}, choose: "b"},
		{name: "a dead agent's replica does not count", agents: []agent{ready("a"), {name: "b", replica: api.ReplicaReady, dead: true}}, choose: "a", forced: "a"},
		{name: "pinned", agents: []agent{ready("a"), ready("b")}, pin: "a", choose: "a", forced: "a"},
		{name: "pinned agent unavailable", agents: []agent{{name: "a", replica: api.ReplicaReady, dead: true}, ready("b")}, pin: "a", reason: api.ReasonAgentUnavailable},
		{name: "pinned agent not registered", agents: []agent{ready("a")}, pin: "zz", reason: api.ReasonAgentNotFound},
		{name: "pinned agent without a Ready replica", agents: []agent{ready("a"), {name: "b", replica: api.ReplicaPending}}, pin: "b", reason: api.ReasonImageNotReady},
		{name: "no agent holds the image", agents: []agent{{name: "a", replica: api.ReplicaFailed}}, reason: api.ReasonNoAgent},
		{name: "no agent at all", reason: api.ReasonNoAgent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := store(t, tt.agents...)
			n := node(tt.pin)
			for _, load := range []func(string) int{
				func(a string) int { return map[string]int{"a": 5}[a] },
				func(string) int { return 0 },
			} {
				got, reason, msg := placement.Choose(st, n, load)
				if tt.forced != "" && got != tt.forced {
					t.Errorf("Choose = %q, but Forced names %q", got, tt.forced)
				}
				if tt.reason != "" && (got != "" || reason != tt.reason || msg == "") {
					t.Errorf("Choose = %q, %q, %q; want none, %s and a message", got, reason, msg, tt.reason)
				}
			}
			if got, _, _ := placement.Choose(st, n, func(a string) int { return map[string]int{"a": 5}[a] }); got != tt.choose {
				t.Errorf("Choose = %q, want %q", got, tt.choose)
			}
			if got := placement.Forced(st, n); got != tt.forced {
				t.Errorf("Forced = %q, want %q", got, tt.forced)
			}
		})
	}
}

// The assignment carries the node's CHAP credentials, the mutual pair
// only with mutual CHAP, and a default initiator IQN.
func TestAssignment(t *testing.T) {
	secret := &sanbootv1.ChapSecret{User: "u", Secret: "s", MutualUser: "mu", MutualSecret: "ms"}
	ref := state.Ref{Project: project, Name: "n1"}
	for _, tt := range []struct{ chap, mutual bool }{{false, false}, {true, false}, {true, true}} {
		t.Run(fmt.Sprintf("chap=%v,mutual=%v", tt.chap, tt.mutual), func(t *testing.T) {
			n := node("")
			n.Spec.Chap, n.Spec.MutualChap = tt.chap, tt.mutual
			a := placement.Assignment(ref, n, secret)
			if a.GetInitiatorIqn() != api.DefaultInitiatorIQN(project, "n1") || a.GetTargetIqn() != api.TargetIQN("", project, "n1") || a.GetGeneration() != 1 {
				t.Errorf("assignment %v", a)
			}
			switch {
			case !tt.chap && a.Chap != nil:
				t.Errorf("credentials without CHAP: %v", a.Chap)
			case tt.chap && a.GetChap().GetSecret() != "s":
				t.Errorf("credentials %v, want the node's", a.Chap)
			case tt.chap && (a.GetChap().GetMutualSecret() != "") != tt.mutual:
				t.Errorf("mutual credentials %v with mutual CHAP %v", a.Chap, tt.mutual)
			}
			if secret.MutualSecret != "ms" {
				t.Error("Assignment changed the secret it was given")
			}
		})
	}
}
