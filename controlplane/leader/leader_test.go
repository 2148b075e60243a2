package leader_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/controlplane/leader"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/kv"
)

// candidate runs leader.Run and records its terms.
type candidate struct {
	name    string
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	leading bool
	terms   int
	events  chan string // "start name" / "stop name"
}

func campaign(t *testing.T, cli *clientv3.Client, name string, events chan string) *candidate {
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{name: name, cancel: cancel, done: make(chan struct{}), events: events}
	log := cptest.Log(t)
	go func() {
		defer close(c.done)
		leader.Run(ctx, cli, leader.Config{Name: name, TTL: 5, Log: log}, func(ctx context.Context, _ kv.Fence) error {
			c.mu.Lock()
			c.leading, c.terms = true, c.terms+1
			c.mu.Unlock()
			events <- "start " + name
			<-ctx.Done()
			c.mu.Lock()
			c.leading = false
			c.mu.Unlock()
			events <- "stop " + name
			return ctx.Err()
		})
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

func next(t *testing.T, events chan string) string {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for a leadership change")
		return ""
	}
}

func TestOneMemberLeads(t *testing.T) {
	m := etcdtest.Start(t)
	events := make(chan string, 10)
	c := campaign(t, m.Client(t), "m1", events)
	if ev := next(t, events); ev != "start m1" {
		t.Fatalf("event = %q", ev)
	}
	c.stop()
	if ev := next(t, events); ev != "stop m1" {
		t.Fatalf("event = %q", ev)
	}
	// Stopping resigned: nobody is left in the election.
	resp, err := m.Client(t).Get(context.Background(), api.ElectionPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("election keys after stop = %v, %v", resp.Count, err)
	}
}

// Two candidates: one leads at a time; when the leader stops, the other
// takes over without waiting for a lease to expire.
func TestOneLeaderAtATimeAndHandOver(t *testing.T) {
	m := etcdtest.Start(t)
	events := make(chan string, 10)
	a := campaign(t, m.Client(t), "a", events)
	first := next(t, events)
	b := campaign(t, m.Client(t), "b", events)
	if first != "start a" {
		t.Fatalf("first event = %q", first)
	}
	select {
	case ev := <-events:
		t.Fatalf("while a leads: %q", ev)
	case <-time.After(500 * time.Millisecond):
	}
	a.stop()
	if ev := next(t, events); ev != "stop a" {
		t.Fatalf("event = %q", ev)
	}
	if ev := next(t, events); ev != "start b" {
		t.Fatalf("event = %q", ev)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.leading {
		t.Fatal("b does not lead")
	}
}

// When the leader's session ends under it, its controllers stop and it
// campaigns again.
func TestLostSessionStopsAndCampaignsAgain(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	events := make(chan string, 10)
	c := campaign(t, cli, "m1", events)
	if ev := next(t, events); ev != "start m1" {
		t.Fatalf("event = %q", ev)
	}
	// Revoke the session's lease behind its back (the key ends in its id).
	resp, err := cli.Get(context.Background(), api.ElectionPrefix, clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("election keys = %v, %v", resp, err)
	}
	key := string(resp.Kvs[0].Key)
	id, err := strconv.ParseInt(key[strings.LastIndexByte(key, '/')+1:], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(id)); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, events); ev != "stop m1" {
		t.Fatalf("event = %q", ev)
	}
	if ev := next(t, events); ev != "start m1" {
		t.Fatalf("event = %q", ev)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.terms != 2 {
		t.Fatalf("terms = %d, want 2", c.terms)
	}
}

// A candidate whose probe says the leader is dead deposes it without
// waiting for its session lease: it leads, and the deposed leader stops
// its controllers at once (its key is gone).
func TestDeposeADeadLeader(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	events := make(chan string, 10)
	campaign(t, cli, "m1", events)
	if ev := next(t, events); ev != "start m1" {
		t.Fatalf("event = %q", ev)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	log := cptest.Log(t)
	go func() {
		defer close(done)
		leader.Run(ctx, cli, leader.Config{Name: "m2", TTL: 60, Log: log, ProbeEvery: 50 * time.Millisecond,
			Probe: func(_ context.Context, name string) error {
				if name == "m1" {
					return errors.New("m1 does not answer")
				}
				return nil
			}}, func(ctx context.Context, _ kv.Fence) error {
			events <- "start m2"
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	defer func() { cancel(); <-done }()
	got := []string{next(t, events), next(t, events)}
	slices.Sort(got)
	if got[0] != "start m2" || got[1] != "stop m1" {
		t.Fatalf("events = %v, want m1 stopped and m2 started", got)
	}
}
