// Package placement decides where an unplaced node goes and what its
// agent is asked to do: the one home of that decision. The scheduler
// places every node with it; the API server asks Forced when it creates a
// node, and when the answer cannot depend on the agents' loads it places
// the node in the transaction that creates it (docs/design.md, "Placement
// at creation"), writing exactly the records the scheduler would.
package placement

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
)

// Choose picks the agent for unplaced node n from what st holds, or says
// why there is none: its pinned agent (spec.agent) when that agent is
// alive and holds a Ready replica of the node's image; else, of the live
// agents holding a Ready replica, the one with the lowest load (ties: by
// name). st must keep Alive, Agents and Replicas.
func Choose(st *state.Store, n *sanbootv1.Node, load func(agent string) int) (agent, reason, msg string) {
	cands, reason, msg := candidates(st, n)
	best, bestLoad := "", 0
	for _, a := range cands {
		if l := load(a); best == "" || l < bestLoad {
			best, bestLoad = a, l
		}
	}
	if best == "" {
		return "", reason, msg
	}
	return best, api.ReasonScheduled, ""
}

// Forced is the agent Choose picks for n whatever the loads: its pinned
// agent, or the only live agent holding a Ready replica of its image. It
// is "" when Choose would pick none, or when the loads would decide.
func Forced(st *state.Store, n *sanbootv1.Node) string {
	if cands, _, _ := candidates(st, n); len(cands) == 1 {
		return cands[0]
	}
	return ""
}

// candidates are the agents Choose picks among, sorted by name, or why
// there is none.
func candidates(st *state.Store, n *sanbootv1.Node) (agents []string, reason, msg string) {
	img := state.Ref{Project: n.GetMetadata().GetProject(), Name: n.GetSpec().GetImage()}
	replicas := st.Replicas[img]
	holds := func(a string) bool { return replicas[a].Msg.GetPhase() == api.ReplicaReady }

	if pin := n.GetSpec().GetAgent(); pin != "" {
		_, registered := st.Agents[pin]
		switch {
		case !registered && !st.IsAlive(pin):
			return nil, api.ReasonAgentNotFound, fmt.Sprintf("pinned agent %q is not registered", pin)
		case !st.IsAlive(pin):
			return nil, api.ReasonAgentUnavailable, fmt.Sprintf("pinned agent %q is unavailable (lease expired)", pin)
		case !holds(pin):
			phase := cmp.Or(replicas[pin].Msg.GetPhase(), "missing")
			return nil, api.ReasonImageNotReady, fmt.Sprintf("pinned agent %q does not hold image %q yet (replica: %s)", pin, img.Name, phase)
		}
		return []string{pin}, "", ""
	}
	for _, a := range slices.Sorted(maps.Keys(st.Alive)) {
		if holds(a) {
			agents = append(agents, a)
		}
	}
	if len(agents) == 0 {
		return nil, api.ReasonNoAgent, fmt.Sprintf("no Ready agent holds image %q", img.Name)
	}
	return agents, "", ""
}

// Placed is the placement record of a node of generation gen placed on
// agent.
func Placed(agent string, gen int64) *sanbootv1.Placement {
	return &sanbootv1.Placement{Agent: agent, Reason: api.ReasonScheduled, Generation: gen}
}

// Assignment is what node n's agent must make true. It carries the node's
// CHAP credentials (secret) when CHAP is on.
func Assignment(ref state.Ref, n *sanbootv1.Node, secret *sanbootv1.ChapSecret) *sanbootv1.Assignment {
	spec := n.GetSpec()
	initiator := spec.GetInitiatorIqn()
	if initiator == "" {
		initiator = api.DefaultInitiatorIQN(ref.Project, ref.Name)
	}
	a := &sanbootv1.Assignment{
		Project:      ref.Project,
		Node:         ref.Name,
		Generation:   n.GetMetadata().GetGeneration(),
		Spec:         proto.CloneOf(spec),
		InitiatorIqn: initiator,
		TargetIqn:    api.TargetIQN("", ref.Project, ref.Name),
		Uid:          n.GetMetadata().GetUid(),
	}
	if spec.GetChap() && secret != nil {
		a.Chap = proto.CloneOf(secret)
		if !spec.GetMutualChap() {
			a.Chap.MutualUser, a.Chap.MutualSecret = "", ""
		}
	}
	return a
}
