package apiserver

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
)

// TestEventRingIsBounded: a node keeps at most max events (the newest), a
// repeated event is counted instead of added, and a node that goes takes
// its events along.
func TestEventRingIsBounded(t *testing.T) {
	l := newEventLog(3)
	l.now = func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	node := func(phase, msg string) *sanbootv1.Node {
		return &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: "p", Name: "n", Generation: 1},
			Spec: &sanbootv1.NodeSpec{Image: "img"}, Status: &sanbootv1.NodeStatus{Phase: phase, Agent: "a", Message: msg}}
	}
	prev := node(api.PhasePending, "")
	l.observe(nil, prev)
	for i := range 5 {
		cur := node(api.PhaseFailed, fmt.Sprintf("try %d", i))
		l.observe(prev, cur)
		prev = cur
	}
	ref := state.Ref{Project: "p", Name: "n"}
	// The same event twice in a row is one event, counted twice.
	l.mu.Lock()
	l.add(ref, event("Warning", api.PhaseFailed, "phase Failed: try 4"))
	l.mu.Unlock()
	got := l.list(ref)
	if len(got) != 3 {
		t.Fatalf("%d events, want 3: %v", len(got), got)
	}
	last := got[2]
	if last.GetReason() != api.PhaseFailed || last.GetMessage() != "phase Failed: try 4" || last.GetType() != "Warning" || last.GetCount() != 2 {
		t.Errorf("last event %v", last)
	}
	l.observe(prev, nil)
	if got := l.list(ref); len(got) != 0 {
		t.Errorf("events of a node that went: %v", got)
	}
}

// TestEventPacking: a ring packed into bytes reads back as it was written
// (the texts, times and counts of every event, in order), and a ring cut
// short reads back as the events before the cut.
func TestEventPacking(t *testing.T) {
	tests := []struct {
		name string
		ring []entry
	}{
		{"empty", nil},
		{"one", []entry{{typ: "Normal", reason: "Created", message: `node created from image "img" (generation 1)`, unixNano: 1796420000123456789, count: 1}}},
		{"empty texts, zero and negative times", []entry{{count: 1}, {typ: "Warning", unixNano: -5, count: 3}}},
		{"long message, large count", []entry{
			{typ: "Normal", reason: "Scheduled", message: `placed on agent "a"`, unixNano: 1, count: 1},
			{typ: "Warning", reason: api.PhaseFailed, message: strings.Repeat("é", 300), unixNano: 2, count: 1 << 30},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := pack(tc.ring)
			if got := unpack(b); !slices.Equal(got, tc.ring) {
				t.Errorf("unpack(pack(%v)) = %v", tc.ring, got)
			}
			if len(tc.ring) > 1 {
				first := len(pack(tc.ring[:1]))
				if got := unpack(b[:first+2]); !slices.Equal(got, tc.ring[:1]) {
					t.Errorf("a ring cut after its first event read back as %v", got)
				}
			}
		})
	}
}

// pack is a ring of entries packed into a slice of just its size.
func pack(ring []entry) []byte {
	var b []byte
	for _, e := range ring {
		b = appendEntry(b, e)
	}
	return bytes.Clone(b)
}
