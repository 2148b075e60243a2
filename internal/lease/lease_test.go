package lease_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/lease"
)

const wait = 60 * time.Second

// A registration is written under a lease, written again under a new one
// when the lease is lost (here: revoked behind the keeper's back), with the
// lost lease passed on, and removed when Run returns.
func TestKeeperRegistersAgainAndRevokes(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	var (
		mu    sync.Mutex
		prevs []clientv3.LeaseID
	)
	k := lease.New(cli, lease.Config{
		What: "test", TTL: 2 * time.Second, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Register: func(ctx context.Context, id, prev clientv3.LeaseID) error {
			mu.Lock()
			prevs = append(prevs, prev)
			mu.Unlock()
			_, err := cli.Put(ctx, "/reg", "x", clientv3.WithLease(id))
			return err
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	select {
	case <-k.Ready():
	case <-time.After(wait):
		t.Fatal("not registered")
	}
	first := k.Lease()
	if _, err := cli.Revoke(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "registered again under a new lease", func() bool {
		resp, err := cli.Get(context.Background(), "/reg")
		return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != int64(first) && clientv3.LeaseID(resp.Kvs[0].Lease) == k.Lease()
	})
	mu.Lock()
	if len(prevs) < 2 || prevs[0] != 0 || prevs[len(prevs)-1] != first {
		t.Errorf("Register saw previous leases %v, want 0 then %x", prevs, first)
	}
	mu.Unlock()
	cancel()
	<-done
	resp, err := cli.Get(context.Background(), "/reg")
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the registration outlived Run: %v %v", resp.Kvs, err)
	}
}
