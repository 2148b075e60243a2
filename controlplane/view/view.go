// Package view joins the records of a state.Store into what the API shows:
// a Node with its status (the agent's report, the scheduler's reason for
// not placing it, or Unavailable while its agent's lease is gone), an Image
// with its replicas and users, an Agent with its liveness and load.
//
// Views are computed, never stored: the same functions serve one-off reads
// and the API server's watch cache. They are deterministic (no clocks), so
// two views of the same records are proto.Equal, and a watcher is told only
// about real changes.
//
// A node's view shares the parts it shows unchanged with the store's
// records (spec, labels, timestamps, portals, sessions): with 10,000 nodes
// a second copy of each costs tens of MiB in the API's cache. Neither
// changes them: a store replaces a record when it changes, and whoever
// wants to change a view's spec or metadata clones it first (a view's own
// top-level fields, its status and its metadata's scalars, are its own).
package view

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
)

// Node is the API's view of node ref, or nil when there is no such node.
// The store must keep Nodes, Placements, NodeStatus and Alive, and Agents
// (for an agent that stopped leaving its targets served) and MACs (for
// MACs another node owns) where they are to show.
func Node(s *state.Store, ref state.Ref) *sanbootv1.Node {
	n := NodeRecord(s, ref)
	if n != nil {
		n.Status = nodeStatus(s, ref, n)
	}
	return n
}

// NodeRecord is node ref as Node shows it without its status (metadata
// and spec), or nil. The store must keep Nodes.
func NodeRecord(s *state.Store, ref state.Ref) *sanbootv1.Node {
	rec, ok := s.Nodes[ref]
	if !ok {
		return nil
	}
	return NodeOf(ref, rec)
}

// NodeOf is node record rec of ref as Node shows it without its status
// (what NodeRecord returns for it).
func NodeOf(ref state.Ref, rec state.Record[*sanbootv1.Node]) *sanbootv1.Node {
	n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{}, Spec: rec.Msg.GetSpec()}
	if m := rec.Msg.GetMetadata(); m != nil {
		n.Metadata = shallow(m)
	}
	// The key is authoritative for project and name.
	n.Metadata.Project, n.Metadata.Name, n.Metadata.Revision = ref.Project, ref.Name, rec.ModRevision
	return n
}

// UnavailableMessage is the status message of a node whose agent lost its lease.
func UnavailableMessage(agent string) string {
	return fmt.Sprintf("agent %q is unavailable (lease expired); the node's disk lives there", agent)
}

func nodeStatus(s *state.Store, ref state.Ref, n *sanbootv1.Node) *sanbootv1.NodeStatus {
	pl, placed := s.Placements[ref]
	agent := pl.Msg.GetAgent()
	out := &sanbootv1.NodeStatus{Agent: agent}
	rep, reported := s.StatusOf(ref)
	if reported {
		r := rep.Msg
		out.Phase, out.Message = r.GetPhase(), r.GetMessage()
		out.TargetIqn, out.Portals, out.Lun = r.GetTargetIqn(), r.GetPortals(), r.GetLun()
		out.ObservedGeneration, out.CloneMode = r.GetObservedGeneration(), r.GetCloneMode()
		out.UpdateTime = r.GetUpdateTime()
	}
	alive := agent != "" && s.IsAlive(agent)
	if reported && alive {
		// What an agent that is gone saw logged in is no longer known.
		out.Sessions = rep.Msg.GetSessions()
	}
	// An agent that stopped on purpose and left its targets serving (a
	// system tgtd, LIO) keeps its Ready nodes Ready.
	var keptSince string
	if rec := s.Agents[agent].Msg; !alive && agent != "" && rec.GetTargetsKept() && rec.GetStopTime() != nil {
		keptSince = rec.GetStopTime().AsTime().UTC().Format(time.RFC3339)
	}

	scheduled := &sanbootv1.Condition{Type: api.ConditionScheduled}
	switch {
	case agent != "":
		scheduled.Status, scheduled.Reason = true, api.ReasonScheduled
		scheduled.Message = fmt.Sprintf("placed on agent %q", agent)
		if pl.Msg.GetMessage() != "" {
			scheduled.Reason, scheduled.Message = pl.Msg.GetReason(), scheduled.Message+"; "+pl.Msg.GetMessage()
		}
	case placed:
		scheduled.Reason, scheduled.Message = pl.Msg.GetReason(), pl.Msg.GetMessage()
	default:
		scheduled.Reason, scheduled.Message = "Pending", "waiting for the scheduler"
	}
	if scheduled.Reason == "" {
		scheduled.Reason = "Unschedulable"
	}
	available := &sanbootv1.Condition{Type: api.ConditionAgentAvailable, Status: alive}
	switch {
	case agent == "":
		available.Reason, available.Message = "NotScheduled", "the node has no agent yet"
	case alive && s.Agents[agent].Msg.GetProblem() != "":
		// Alive but not serving its targets (its tgtd is down...).
		available.Status = false
		available.Reason, available.Message = "AgentNotReady", fmt.Sprintf("agent %q is alive but not Ready: %s", agent, s.Agents[agent].Msg.GetProblem())
	case alive:
		available.Reason, available.Message = "LeaseAlive", fmt.Sprintf("agent %q is alive", agent)
	case keptSince != "":
		available.Reason, available.Message = "AgentStopped", fmt.Sprintf("agent %q stopped at %s and left its targets serving", agent, keptSince)
	default:
		available.Reason, available.Message = "LeaseExpired", UnavailableMessage(agent)
	}

	switch {
	case n.Metadata.GetDeleteTime() != nil:
		out.Phase = api.PhaseDeleting
		switch {
		case agent == "":
			out.Message = "deletion requested; the node was never placed, so nothing to tear down"
		case !alive:
			out.Message = fmt.Sprintf("deletion requested; waiting for agent %q, which is unavailable (lease expired)", agent)
		case reported && rep.Msg.GetPhase() == api.PhaseDeleted:
			out.Message = fmt.Sprintf("agent %q has torn the node down; removing its records", agent)
		default:
			out.Message = fmt.Sprintf("deletion requested; waiting for agent %q to tear down the target and the disk", agent)
		}
	case agent == "":
		out.Phase, out.Message = api.PhasePending, scheduled.Message
	case !alive && keptSince != "" && reported && out.Phase == api.PhaseReady:
		out.Message = fmt.Sprintf("agent %q stopped at %s and left the target serving (its target system outlives it): "+
			"the node keeps its disk; nobody checks the target until the agent is back", agent, keptSince)
	case !alive:
		out.Phase, out.Message = api.PhaseUnavailable, UnavailableMessage(agent)
	case !reported || out.Phase == "":
		out.Phase, out.Message = api.PhasePending, fmt.Sprintf("placed on agent %q; waiting for it to report", agent)
	}
	if n.Metadata.GetDeleteTime() == nil {
		out.FailoverAgents = FailoverAgents(s, agent)
	}
	ready := &sanbootv1.Condition{Type: api.ConditionReady, Status: out.Phase == api.PhaseReady, Reason: out.Phase, Message: out.Message}
	out.Conditions = []*sanbootv1.Condition{scheduled, available, ready}
	if p := macProblems(s, ref, n.GetSpec().GetMacs()); len(p) > 0 {
		msg := strings.Join(p, "; ") + ": the boot server serves such a MAC to no node; remove it from one of them (boot by name works: /boot/" +
			ref.Project + "/" + ref.Name + ")"
		out.Conditions = append(out.Conditions, &sanbootv1.Condition{Type: api.ConditionMACsBoot, Reason: "MACShared", Message: msg})
		out.Message += "; " + msg
	}
	return out
}

// macProblems says which of a node's MACs cannot boot it because the MAC
// index gives them to another node (nodes written before MACs were
// indexed may share one); empty when none, or when s keeps no MACs.
func macProblems(s *state.Store, ref state.Ref, macs []string) []string {
	var out []string
	for _, m := range macs {
		mac, err := api.NormalizeMAC("spec.macs", m)
		if err != nil {
			continue
		}
		if owner, ok := s.MACOwner(mac); ok && owner != ref {
			out = append(out, fmt.Sprintf("MAC %s is also in the spec.macs of node %s, which owns it", mac, owner))
		}
	}
	return out
}

// shallow returns a new message with src's fields; its lists, maps and
// messages are src's own (shared: see the package comment).
func shallow[T proto.Message](src T) T {
	dst := src.ProtoReflect().New()
	src.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	return dst.Interface().(T)
}

// NodeFilter selects nodes for List and Watch.
type NodeFilter struct {
	// Project is the only project selected, unless AllProjects.
	Project     string
	AllProjects bool
	Selector    api.Selector
	// Names, when not empty, are the only names selected (in Project).
	Names map[string]bool
}

// Matches reports whether n is selected.
func (f NodeFilter) Matches(n *sanbootv1.Node) bool {
	m := n.GetMetadata()
	if !f.AllProjects && m.GetProject() != f.Project {
		return false
	}
	if len(f.Names) > 0 && !f.Names[m.GetName()] {
		return false
	}
	return f.Selector.Matches(m.GetLabels())
}

// Nodes returns the views of every node f selects, sorted by project and name.
func Nodes(s *state.Store, f NodeFilter) []*sanbootv1.Node {
	out := NodeRecords(s, f)
	for _, n := range out {
		m := n.GetMetadata()
		n.Status = nodeStatus(s, state.Ref{Project: m.GetProject(), Name: m.GetName()}, n)
	}
	return out
}

// NodeRecords returns every node f selects as NodeRecord shows it
// (metadata and spec, no status), sorted by project and name. The nodes
// share their spec and labels with the store's records: never change them.
func NodeRecords(s *state.Store, f NodeFilter) []*sanbootv1.Node {
	var refs []state.Ref
	for ref := range s.Nodes {
		if f.AllProjects || ref.Project == f.Project {
			refs = append(refs, ref)
		}
	}
	slices.SortFunc(refs, compareRefs)
	var out []*sanbootv1.Node
	for _, ref := range refs {
		// The filter reads metadata only.
		if n := NodeRecord(s, ref); f.Matches(n) {
			out = append(out, n)
		}
	}
	return out
}

// Image is the API's view of image ref, or nil. usedBy lists the nodes of
// its project whose spec names it. The store must keep Images, Replicas and
// Agents and Alive (to know which agents should hold it).
func Image(s *state.Store, ref state.Ref, usedBy []string) *sanbootv1.Image {
	rec, ok := s.Images[ref]
	if !ok {
		return nil
	}
	im := &sanbootv1.Image{
		Metadata: proto.CloneOf(rec.Msg.GetMetadata()),
		Spec:     proto.CloneOf(rec.Msg.GetSpec()),
	}
	if im.Metadata == nil {
		im.Metadata = &sanbootv1.ObjectMeta{}
	}
	im.Metadata.Project, im.Metadata.Name, im.Metadata.Revision = ref.Project, ref.Name, rec.ModRevision
	st := &sanbootv1.ImageStatus{UsedBy: slices.Clone(usedBy)}
	reps := s.Replicas[ref]
	for _, agent := range slices.Sorted(maps.Keys(reps)) {
		r := proto.CloneOf(reps[agent].Msg)
		r.Agent = agent
		st.Replicas = append(st.Replicas, r)
		if st.Sha256 == "" && r.GetPhase() == api.ReplicaReady {
			st.Sha256 = r.GetSha256()
		}
	}
	st.Phase = imagePhase(s, im.Spec.GetAgents(), reps)
	im.Status = st
	return im
}

// imagePhase is Ready when every live agent that should hold the image
// holds it, Failed when one of them failed, Pending otherwise. An image
// whose agents are all down is Ready if some replica is.
func imagePhase(s *state.Store, wanted []string, reps map[string]state.Record[*sanbootv1.ImageReplica]) string {
	if len(wanted) == 0 {
		wanted = slices.Collect(maps.Keys(s.Agents))
	}
	var live []string
	for _, a := range wanted {
		if s.IsAlive(a) {
			live = append(live, a)
		}
	}
	if len(live) == 0 {
		for _, r := range reps {
			if r.Msg.GetPhase() == api.ReplicaReady {
				return api.ReplicaReady
			}
		}
		return api.ReplicaPending
	}
	phase := api.ReplicaReady
	for _, a := range live {
		switch reps[a].Msg.GetPhase() {
		case api.ReplicaReady:
		case api.ReplicaFailed:
			return api.ReplicaFailed
		default:
			phase = api.ReplicaPending
		}
	}
	return phase
}

// UsedBy maps every image to the sorted names of the nodes (of its
// project) whose spec names it. The store must keep Nodes.
func UsedBy(s *state.Store) map[state.Ref][]string {
	out := map[state.Ref][]string{}
	for _, ref := range sortedRefs(s.Nodes) {
		img := state.Ref{Project: ref.Project, Name: s.Nodes[ref].Msg.GetSpec().GetImage()}
		out[img] = append(out[img], ref.Name)
	}
	return out
}

// UsedByImage names the nodes that use image ref (of its project), sorted.
func UsedByImage(s *state.Store, ref state.Ref) []string {
	var out []string
	for n, rec := range s.Nodes {
		if n.Project == ref.Project && rec.Msg.GetSpec().GetImage() == ref.Name {
			out = append(out, n.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Images returns the views of every image in project (all when empty),
// sorted, with selector applied to their labels.
func Images(s *state.Store, project string, sel api.Selector) []*sanbootv1.Image {
	used := UsedBy(s)
	var out []*sanbootv1.Image
	for _, ref := range sortedRefs(s.Images) {
		if project != "" && ref.Project != project {
			continue
		}
		if im := Image(s, ref, used[ref]); sel.Matches(im.GetMetadata().GetLabels()) {
			out = append(out, im)
		}
	}
	return out
}

// Agent is the API's view of an agent, or nil when it is neither registered
// nor alive. The store must keep Agents, Alive and Assign.
func Agent(s *state.Store, name string) *sanbootv1.Agent {
	rec, registered := s.Agents[name]
	alive := s.IsAlive(name)
	if !registered && !alive {
		return nil
	}
	a := &sanbootv1.Agent{Record: proto.CloneOf(rec.Msg), State: api.AgentUnavailable, Nodes: int64(s.AssignCount(name))}
	if a.Record == nil {
		a.Record = &sanbootv1.AgentRecord{}
	}
	a.Record.Name = name
	switch {
	case !alive && a.Record.GetTargetsKept() && a.Record.GetStopTime() != nil:
		a.Message = fmt.Sprintf("agent %q stopped at %s and left its targets serving (unchecked until it is back)",
			name, a.Record.GetStopTime().AsTime().UTC().Format(time.RFC3339))
	case !alive:
		a.Message = fmt.Sprintf("agent %q is unavailable (lease expired): it stopped, or cannot reach etcd", name)
	case a.Record.GetProblem() != "":
		a.State, a.Message = api.AgentNotReady, a.Record.GetProblem()
	default:
		a.State = api.AgentReady
	}
	return a
}

// FailoverAgents are the agents a node of agent could fail over to: the
// other Ready agents (alive, no problem) of agent's storage domain, sorted.
// Nil when agent is in no domain (its disks live on its own host). The
// store must keep Agents and Alive.
func FailoverAgents(s *state.Store, agent string) []string {
	domain := s.Agents[agent].Msg.GetStorageDomain()
	if agent == "" || domain == "" {
		return nil
	}
	var out []string
	for name, rec := range s.Agents {
		if name != agent && rec.Msg.GetStorageDomain() == domain && s.IsAlive(name) && rec.Msg.GetProblem() == "" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// AgentPortals are the portals agent rec tells nodes to use: its
// advertised portals, else the ones its targets listen on.
func AgentPortals(rec *sanbootv1.AgentRecord) []string {
	if p := rec.GetAdvertisePortals(); len(p) > 0 {
		return p
	}
	return rec.GetPortals()
}

// Agents returns every agent's view, sorted by name.
func Agents(s *state.Store) []*sanbootv1.Agent {
	names := map[string]bool{}
	for n := range s.Agents {
		names[n] = true
	}
	for n := range s.Alive {
		names[n] = true
	}
	var out []*sanbootv1.Agent
	for _, n := range slices.Sorted(maps.Keys(names)) {
		out = append(out, Agent(s, n))
	}
	return out
}

func sortedRefs[V any](m map[state.Ref]V) []state.Ref {
	refs := slices.Collect(maps.Keys(m))
	slices.SortFunc(refs, compareRefs)
	return refs
}

// compareRefs orders refs by project, then name.
func compareRefs(a, b state.Ref) int {
	return cmp.Or(strings.Compare(a.Project, b.Project), strings.Compare(a.Name, b.Name))
}
