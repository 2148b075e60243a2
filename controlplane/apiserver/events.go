package apiserver

import (
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

// packed is one entry of a packed ring as read in place: its texts are
// the ring's bytes.
type packed struct {
	texts    [3][]byte // type, reason, message
	unixNano int64
	count    uint64
	size     int // bytes the entry takes in the ring
}

// next reads the entry at the start of b; false at the end of the ring
// (or at anything it cannot read: the log wrote the ring).
func next(b []byte) (packed, bool) {
	var p packed
	rest := b
	for i := range p.texts {
		n, k := binary.Uvarint(rest)
		if k <= 0 || uint64(len(rest)-k) < n {
			return p, false
		}
		p.texts[i], rest = rest[k:k+int(n)], rest[k+int(n):]
	}
	t, k := binary.Varint(rest)
	if k <= 0 {
		return p, false
	}
	rest = rest[k:]
	c, k := binary.Uvarint(rest)
	if k <= 0 {
		return p, false
	}
	p.unixNano, p.count, p.size = t, c, len(b)-len(rest)+k
	return p, true
}

// unpack returns the entries of a packed ring.
func unpack(b []byte) []entry {
	var out []entry
	for {
		p, ok := next(b)
		if !ok {
			return out
		}
		out = append(out, entry{typ: string(p.texts[0]), reason: string(p.texts[1]), message: string(p.texts[2]),
			unixNano: p.unixNano, count: int32(p.count)})
		b = b[p.size:]
	}
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
	ring := l.rings[ref]
	// Read the ring in place: where each entry starts, and the last one.
	var starts []int
	var last packed
	for off := 0; ; off += last.size {
		p, ok := next(ring[off:])
		if !ok {
			break
		}
		starts, last = append(starts, off), p
	}
	add := entry{typ: e.GetType(), reason: e.GetReason(), message: e.GetMessage(), unixNano: now, count: 1}
	keep := ring
	switch k := len(starts); {
	case k > 0 && string(last.texts[0]) == add.typ && string(last.texts[1]) == add.reason && string(last.texts[2]) == add.message:
		// The same as the last: counted again, at the new time.
		keep, add.count = ring[:starts[k-1]], int32(last.count)+1
	case k >= l.max:
		keep = ring[starts[k-l.max+1]:]
	}
	b := make([]byte, 0, len(keep)+len(add.typ)+len(add.reason)+len(add.message)+3*binary.MaxVarintLen64)
	l.rings[ref] = appendEntry(append(b, keep...), add)
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
