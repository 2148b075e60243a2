package member_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/controlplane/member"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
)

func config(t *testing.T, dir string) member.Config {
	cfg := member.DefaultConfig()
	cfg.Name = "m1"
	cfg.DataDir = dir
	addrs := etcdtest.FreeAddrs(t, 2)
	cfg.Client.ListenURLs = []url.URL{{Scheme: "http", Host: addrs[0]}}
	cfg.Peer.ListenURLs = []url.URL{{Scheme: "http", Host: addrs[1]}}
	cfg.Log = cptest.Log(t)
	return cfg
}

func TestRestartKeepsState(t *testing.T) {
	ctx := context.Background()
	cfg := config(t, t.TempDir())
	m, err := member.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	m.Close()

	m, err = member.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cli, err = m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v, %v", resp, err)
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	cfg := config(t, t.TempDir())
	cfg.Client.ListenURLs = []url.URL{{Scheme: "http", Host: "0.0.0.0:2379"}}
	if _, err := member.Start(context.Background(), cfg); err == nil {
		t.Fatal("started on 0.0.0.0")
	}
}

func TestStartFailsOnABusyPort(t *testing.T) {
	ctx := context.Background()
	cfg := config(t, t.TempDir())
	m, err := member.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	other := config(t, t.TempDir())
	other.Client.ListenURLs = cfg.Client.ListenURLs
	if m2, err := member.Start(ctx, other); err == nil {
		m2.Close()
		t.Fatal("a second member started on the same client port")
	}
}

// The member compacts its history as configured (sanboot's default:
// periodic, 5m): an old revision goes.
func TestAutoCompaction(t *testing.T) {
	ctx := context.Background()
	cfg := config(t, t.TempDir())
	cfg.Storage.AutoCompactionRetention = "1s" // periodic
	m, err := member.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cli, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	first, err := cli.Put(ctx, "/k", "v0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := cli.Put(ctx, "/k", fmt.Sprint("v", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	// etcd compacts once the retention has passed; allow a loaded machine.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := cli.Get(ctx, "/k", clientv3.WithRev(first.Header.Revision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision %d still readable: the member does not compact", first.Header.Revision)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
