package apiserver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
)

// Node events.
//
// The events of "sanbootctl describe node" are derived, on each member,
// from the changes of node views that the watch cache computes anyway (one
// etcd watch): nothing more is written to etcd, so recording them costs no
// write on the path of provisioning and needs no garbage collection. They
// live in memory, a bounded ring per node (eventsPerNode), and go with the
// node. The price: a member knows only what changed since it started, and
// two members may differ in how far back they remember.

// eventsPerNode bounds the ring of each node.
const eventsPerNode = 20

// eventLog holds the recent events of every node.
type eventLog struct {
	mu    sync.Mutex
	max   int
	rings map[state.Ref][]entry
	now   func() time.Time
}

// entry is an event as the log keeps it: a few times smaller than a
// sanbootv1.Event with its timestamp message, which list makes (with
// 10,000 nodes the difference is megabytes).
type entry struct {
	typ, reason, message string
	unixNano             int64
	count                int32
}

func newEventLog(max int) *eventLog {
	return &eventLog{max: max, rings: map[state.Ref][]entry{}, now: time.Now}
}

// observe records the events between two views of a node (old or cur nil
// when the node appeared or went).
func (l *eventLog) observe(old, cur *sanbootv1.Node) {
	n := cur
	if n == nil {
		n = old
	}
	ref := state.Ref{Project: api.ProjectOrDefault(n.GetMetadata().GetProject()), Name: n.GetMetadata().GetName()}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur == nil {
		delete(l.rings, ref)
		return
	}
	for _, e := range nodeEvents(old, cur) {
		l.add(ref, e)
	}
}

// add appends e to ref's ring, or counts it again when it repeats the last
// event. l.mu is held.
func (l *eventLog) add(ref state.Ref, e *sanbootv1.Event) {
	now := l.now().UnixNano()
	ring := l.rings[ref]
	if k := len(ring); k > 0 {
		last := &ring[k-1]
		if last.typ == e.GetType() && last.reason == e.GetReason() && last.message == e.GetMessage() {
			last.count++
			last.unixNano = now
			return
		}
	}
	ring = append(ring, entry{typ: e.GetType(), reason: e.GetReason(), message: e.GetMessage(), unixNano: now, count: 1})
	if len(ring) > l.max {
		ring = append(ring[:0:0], ring[len(ring)-l.max:]...)
	}
	l.rings[ref] = ring
}

func (l *eventLog) list(ref state.Ref) []*sanbootv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*sanbootv1.Event, len(l.rings[ref]))
	for i, e := range l.rings[ref] {
		out[i] = &sanbootv1.Event{Type: e.typ, Reason: e.reason, Message: e.message,
			Time: timestamppb.New(time.Unix(0, e.unixNano)), Count: e.count}
	}
	return out
}

func event(typ, reason, format string, a ...any) *sanbootv1.Event {
	return &sanbootv1.Event{Type: typ, Reason: reason, Message: fmt.Sprintf(format, a...)}
}

// nodeEvents says what happened between two views of a node (old nil: it
// appeared).
func nodeEvents(old, cur *sanbootv1.Node) []*sanbootv1.Event {
	const normal, warning = "Normal", "Warning"
	var out []*sanbootv1.Event
	om, cm := old.GetMetadata(), cur.GetMetadata()
	ostat, cs := old.GetStatus(), cur.GetStatus()
	switch {
	case old == nil:
		out = append(out, event(normal, "Created", "node created from image %q (generation %d)", cur.GetSpec().GetImage(), cm.GetGeneration()))
	case cm.GetGeneration() != om.GetGeneration():
		out = append(out, event(normal, "SpecChanged", "spec changed: generation %d → %d", om.GetGeneration(), cm.GetGeneration()))
	}
	if cm.GetDeleteTime() != nil && om.GetDeleteTime() == nil {
		out = append(out, event(normal, "DeletionRequested", "deletion requested; the agent tears down the target and the disk"))
	}
	if a := cs.GetAgent(); a != "" && a != ostat.GetAgent() {
		out = append(out, event(normal, "Scheduled", "placed on agent %q", a))
	}
	phase, msg := cs.GetPhase(), cs.GetMessage()
	if phase != ostat.GetPhase() || msg != ostat.GetMessage() {
		typ := normal
		switch phase {
		case api.PhaseFailed, api.PhaseUnavailable:
			typ = warning
		case api.PhasePending:
			for _, c := range cs.GetConditions() {
				if c.GetType() == api.ConditionScheduled && !c.GetStatus() && c.GetReason() != "Pending" && c.GetReason() != "" {
					typ = warning // unschedulable: the message says why
				}
			}
		}
		text := "phase " + phase
		if msg != "" {
			text += ": " + msg
		}
		out = append(out, event(typ, phase, "%s", text))
	}
	return out
}

// ListNodeEvents returns the recent events of a node that this member saw.
func (s *Server) ListNodeEvents(ctx context.Context, req *sanbootv1.GetRequest) (*sanbootv1.ListEventsResponse, error) {
	ref, err := refOf(req.GetProject(), req.GetName())
	if err != nil {
		return nil, err
	}
	events := s.events.list(ref)
	if len(events) == 0 {
		// Not seen (yet): say NotFound only when the node does not exist.
		if _, err := s.GetNode(ctx, req); err != nil {
			return nil, err
		}
	}
	return &sanbootv1.ListEventsResponse{Events: events}, nil
}
