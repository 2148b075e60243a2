package scheduler_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/scheduler"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/kv"
)

// A scheduler that starts on the member's informer (a new leader) plans
// from the informer's store: a node the informer already holds is placed
// although no event about it comes after the scheduler starts. Fenced, it
// first waits until the informer has seen its election's revision: while
// the informer is held back before that revision, it writes nothing.
func TestNewLeaderPlansFromTheMembersInformer(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := cptest.Log(t)
	inf := informer.New(cli, log)
	infDone := make(chan struct{})
	go func() { defer close(infDone); inf.Run(ctx) }()
	defer func() { inf.Resume(); cancel(); <-infDone }()

	e := &env{t: t, cli: cli, ctx: ctx}
	e.agent("a1", api.ReplicaReady)
	e.putNode("n1", &sanbootv1.NodeSpec{Image: image})
	head, err := cli.Get(ctx, api.NodeKey(project, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := inf.WaitRevision(ctx, head.Header.Revision); err != nil {
		t.Fatal(err)
	}

	// The informer is held back; the election is won after what it saw.
	inf.Pause()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, api.ElectionPrefix)
	if err := el.Campaign(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	fence := kv.Fence{Key: el.Key(), CreateRevision: el.Rev()}
	if got := inf.Revision(); got >= fence.CreateRevision {
		t.Fatalf("the informer is at %d, not held back before the election's %d", got, fence.CreateRevision)
	}
	done := make(chan error, 1)
	go func() {
		done <- scheduler.New(cli, scheduler.Config{Log: log, Fence: fence, Informer: inf}).Run(ctx)
	}()
	time.Sleep(time.Second) // a chance to go wrong: it must not plan from a store older than its election
	if _, err := kv.Get(ctx, cli, api.PlacementKey(project, "n1"), &sanbootv1.Placement{}); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("the scheduler placed n1 from a store older than its election (get: %v)", err)
	}
	inf.Resume()
	e.waitPlacement("n1", func(p *sanbootv1.Placement) bool { return p.Agent == "a1" })
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}
