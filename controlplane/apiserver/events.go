package apiserver

import (
	"bytes"
	"context"
	"encoding/binary"
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
	mu  sync.Mutex
	max int
	// rings are each node's events, packed into one byte slice (see
	// appendEntry): a slice of entries with a string allocated per
	// message took twice the memory (with 10,000 nodes, 9 MB of a
	// member's heap against 4).
	rings map[state.Ref][]byte
	now   func() time.Time
}

// entry is an event as the log keeps it: a few times smaller than a
// sanbootv1.Event with its timestamp message, which list makes.
type entry struct {
	typ, reason, message string
	unixNano             int64
	count                int32
}

// appendEntry appends e to a packed ring: its three texts (each its
// length, then its bytes), its time and its count, as varints.
func appendEntry(b []byte, e entry) []byte {
	for _, s := range []string{e.typ, e.reason, e.message} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, e.unixNano)
	return binary.AppendUvarint(b, uint64(e.count))
}

// unpack returns the entries of a packed ring (the log wrote it: it
// stops at anything it cannot read).
func unpack(b []byte) []entry {
	var out []entry
	for len(b) > 0 {
		var e entry
		for _, s := range []*string{&e.typ, &e.reason, &e.message} {
			n, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n {
				return out
			}
			*s, b = string(b[k:k+int(n)]), b[k+int(n):]
		}
		t, k := binary.Varint(b)
		if k <= 0 {
			return out
		}
		b = b[k:]
		c, k := binary.Uvarint(b)
		if k <= 0 {
			return out
		}
		b = b[k:]
		e.unixNano, e.count = t, int32(c)
		out = append(out, e)
	}
	return out
}

// pack is a ring of entries packed into a slice of just its size.
func pack(ring []entry) []byte {
	var b []byte
	for _, e := range ring {
		b = appendEntry(b, e)
	}
	return bytes.Clone(b)
}

func newEventLog(max int) *eventLog {
	return &eventLog{max: max, rings: map[state.Ref][]byte{}, now: time.Now}
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
	ring := unpack(l.rings[ref])
	if k := len(ring); k > 0 && ring[k-1].typ == e.GetType() && ring[k-1].reason == e.GetReason() && ring[k-1].message == e.GetMessage() {
		ring[k-1].count++
		ring[k-1].unixNano = now
	} else {
		ring = append(ring, entry{typ: e.GetType(), reason: e.GetReason(), message: e.GetMessage(), unixNano: now, count: 1})
	}
	if len(ring) > l.max {
		ring = ring[len(ring)-l.max:]
	}
	l.rings[ref] = pack(ring)
}

func (l *eventLog) list(ref state.Ref) []*sanbootv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	ring := unpack(l.rings[ref])
	out := make([]*sanbootv1.Event, len(ring))
	for i, e := range ring {
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
