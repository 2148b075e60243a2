package scheduler

import (
	"maps"
	"slices"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
)

// Storage domains. Agents whose records name the same non-empty
// storage_domain reach the same disks (agents sharing an RBD pool): a node
// placed on one of them can be served by any other with no data copied.
// When a node's agent is unavailable (its lease expired) the scheduler
// moves the node's placement and assignment to the live agent of the
// domain that holds the node's image and has the fewest assignments. The
// old assignment is deleted in the same transaction, so the old agent,
// when it comes back, sees no assignment and its target GC removes the
// target; a removed assignment never deletes a disk.

//
// A node deleted while its agent is unavailable moves the same way, so
// that another agent of the domain tears it down (removes its disk from
// the shared store) instead of the deletion waiting for the dead agent;
// its image need not exist any more. A forced deletion does not wait for
// that: its records go at once and its disk stays in the store.

// stranded adds to refs the nodes placed on an unavailable agent of a
// storage domain: those failover may move.
func (s *Scheduler) stranded(refs map[state.Ref]bool) {
	st := s.store
	for ref, pl := range st.Placements {
		agent := pl.Msg.GetAgent()
		if agent == "" || st.IsAlive(agent) || st.Agents[agent].Msg.GetStorageDomain() == "" {
			continue
		}
		if _, ok := st.Nodes[ref]; ok {
			refs[ref] = true
		}
	}
}

// failoverTarget is failover for a placed node whose agent may be alive:
// "" while it is.
func (s *Scheduler) failoverTarget(agent string, n *sanbootv1.Node, picks map[string]int) string {
	if s.store.IsAlive(agent) {
		return ""
	}
	return s.failover(agent, n, picks)
}

// failover picks the agent that takes over node n from the unavailable
// agent from, or "" when from is in no storage domain or no agent of its
// domain holds the node's image (then the disk may not be in the domain's
// store either).
func (s *Scheduler) failover(from string, n *sanbootv1.Node, picks map[string]int) string {
	st := s.store
	domain := st.Agents[from].Msg.GetStorageDomain()
	if domain == "" {
		return ""
	}
	// The image is in the domain's store when any agent of the domain
	// holds it (the node's disk is there anyway).
	img := state.Ref{Project: n.GetMetadata().GetProject(), Name: n.GetSpec().GetImage()}
	inDomain := n.GetMetadata().GetDeleteTime() != nil // a teardown needs no image
	for a, r := range st.Replicas[img] {
		if r.Msg.GetPhase() == api.ReplicaReady && st.Agents[a].Msg.GetStorageDomain() == domain {
			inDomain = true
		}
	}
	if !inDomain {
		return ""
	}
	best, bestLoad := "", 0
	for _, a := range slices.Sorted(maps.Keys(st.Alive)) {
		if a == from || st.Agents[a].Msg.GetStorageDomain() != domain {
			continue
		}
		load := st.AssignCount(a) + s.writtenPerAgent[a] + picks[a]
		if best == "" || load < bestLoad {
			best, bestLoad = a, load
		}
	}
	return best
}
