package reconciler_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/store"
	fakestore "github.com/sanboot/sanboot/agent/store/fake"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
)

// outage is a fake target-system outage: what a tgt.Keeper reports while
// its tgtd is dead.
type outage struct {
	mu  sync.Mutex
	err error
}

func (o *outage) set(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.err = err
}

func (o *outage) get() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// TestTargetSystemOutage: the target system dies (its targets with it):
// Ready nodes say Unavailable with the reason and the agent's Problem
// says it; when it comes back, the targets are rebuilt and the nodes are
// Ready again.
func TestTargetSystemOutage(t *testing.T) {
	h := newHarness(t)
	var down outage
	var mu sync.Mutex
	var reported []string
	h.start(func(c *reconciler.Config) {
		c.TargetProblem = down.get
		c.HealthInterval = time.Hour // only CheckTargets runs the checks here
		c.OnProblem = func(p string) { mu.Lock(); reported = append(reported, p); mu.Unlock() }
	})
	h.putImage("default", "golden", 1)
	nodes := []string{"node-01", "node-02"}
	for _, n := range nodes {
		h.assign(assignment("default", n, 1))
	}
	for _, n := range nodes {
		h.waitReady("default", n, 1)
	}
	if p := h.r.Problem(); p != "" {
		t.Fatalf("Problem with every target served: %q", p)
	}

	// tgtd dies: its targets are gone, and nothing can be built.
	const why = "the managed tgtd died (signal: killed)"
	down.set(errors.New(why))
	h.driver.Reset()
	h.driver.FailWith(func(op, iqn string) error { return errors.New("tgtadm: can't connect to the tgt daemon") })
	h.r.CheckTargets()
	for _, n := range nodes {
		h.waitStatus("default", n, "Unavailable saying why", func(st *sanbootv1.NodeStatus) bool {
			return st.Phase == api.PhaseUnavailable && strings.Contains(st.Message, why)
		})
	}
	if p := h.r.Problem(); !strings.Contains(p, why) {
		t.Errorf("Problem during the outage = %q, want it to say %q", p, why)
	}

	// tgtd runs again, empty: the targets come back, the nodes are Ready.
	h.driver.FailWith(nil)
	down.set(nil)
	h.r.CheckTargets()
	for _, n := range nodes {
		h.waitReady("default", n, 1)
		if _, ok := h.target(api.TargetIQN("", "default", n)); !ok {
			t.Errorf("target of %s not rebuilt", n)
		}
	}
	eventually.True(t, "Problem cleared", func() bool { return h.r.Problem() == "" })
	eventually.True(t, "OnProblem told of the outage and of its end", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reported) >= 2 && strings.Contains(reported[0], why) && reported[len(reported)-1] == ""
	})
}

// TestVanishedTargetIsNoticed: the targets vanish while the target system
// keeps answering (a system tgtd restarted by its service manager): the
// periodic check finds the Ready node's target missing, says so, and
// builds it again.
func TestVanishedTargetIsNoticed(t *testing.T) {
	h := newHarness(t)
	h.start(func(c *reconciler.Config) {
		c.HealthInterval = 50 * time.Millisecond
		c.ResyncInterval = time.Hour // the target check, not the resync, must notice
	})
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	h.waitReady("default", "node-01", 1)

	hold := errors.New("held by the test")
	h.driver.FailWith(func(op, iqn string) error { return hold })
	h.driver.Reset()
	st := h.waitStatus("default", "node-01", "not Ready once its target is gone", func(st *sanbootv1.NodeStatus) bool {
		return st.Phase != api.PhaseReady
	})
	if !strings.Contains(st.Message, api.TargetIQN("", "default", "node-01")) {
		t.Errorf("status after the target vanished: %v; want the message to name the target", st)
	}
	h.driver.FailWith(nil)
	h.waitReady("default", "node-01", 1)
	if _, ok := h.target(api.TargetIQN("", "default", "node-01")); !ok {
		t.Error("target not rebuilt")
	}
	eventually.True(t, "Problem cleared", func() bool { return h.r.Problem() == "" })
}

// fullStore is the fake store with a free space the test sets.
type fullStore struct {
	*fakestore.Store
	mu   sync.Mutex
	free int64
}

func (s *fullStore) Capacity(ctx context.Context) (store.Capacity, error) {
	c, err := s.Store.Capacity(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.free >= 0 {
		c.FreeBytes = s.free
	}
	return c, err
}

func (s *fullStore) setFree(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free = n
}

// A full store makes writes to the disks fail: Ready nodes say so, and
// stop saying it once there is space again.
func TestFullStoreShowsOnNodes(t *testing.T) {
	h := newHarness(t)
	fs := &fullStore{Store: h.store, free: -1}
	h.start(func(c *reconciler.Config) {
		c.Store = fs
		c.HealthInterval = 50 * time.Millisecond
	})
	h.putImage("default", "golden", 1)
	h.assign(assignment("default", "node-01", 1))
	h.waitReady("default", "node-01", 1)

	fs.setFree(0)
	h.waitStatus("default", "node-01", "Ready, saying the store is full", func(st *sanbootv1.NodeStatus) bool {
		return st.Phase == api.PhaseReady && strings.Contains(st.Message, "is full") && strings.Contains(st.Message, "writes")
	})
	eventually.True(t, "the agent's Problem says the store is full", func() bool { return strings.Contains(h.r.Problem(), "is full") })

	fs.setFree(1 << 30)
	h.waitStatus("default", "node-01", "Ready without the warning", func(st *sanbootv1.NodeStatus) bool {
		return st.Phase == api.PhaseReady && !strings.Contains(st.Message, "is full")
	})
	eventually.True(t, "Problem cleared", func() bool { return h.r.Problem() == "" })
}
