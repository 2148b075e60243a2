// Package etcdtest starts a real embedded etcd member for tests: one member,
// random loopback ports, data in t.TempDir(). It is the same etcd the
// control plane embeds, not a fake.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/testsecrets"
)

// Member is a running embedded etcd.
type Member struct {
	Etcd      *embed.Etcd
	Endpoints []string
	peer      string
	dir       string
	t         testing.TB
}

// Start starts a member in a new temp dir and stops it when the test ends.
func Start(t testing.TB) *Member {
	t.Helper()
	m := &Member{dir: t.TempDir(), t: t}
	m.start()
	t.Cleanup(m.Stop)
	return m
}

// Restart stops the member and starts it again on the same data (and new
// ports are not needed: the same ones are reused).
func (m *Member) Restart() {
	m.t.Helper()
	m.Stop()
	m.start()
}

// Stop stops the member; it can be started again with Restart. It first
// records the CHAP secrets the store holds for the suite's scan of the
// logs (package testsecrets).
func (m *Member) Stop() {
	if m.Etcd != nil {
		m.recordSecrets()
		m.Etcd.Close()
		<-m.Etcd.Server.StopNotify()
		m.Etcd = nil
	}
}

func (m *Member) start() {
	m.t.Helper()
	fresh := m.Endpoints == nil
	for attempt := 1; ; attempt++ {
		if fresh {
			m.Endpoints = []string{"http://" + FreeAddr(m.t)}
			m.peer = "http://" + FreeAddr(m.t)
		}
		e, err := m.startOnce()
		// FreeAddr's port is free when it answers, not when etcd binds it:
		// another test may take it in between; a new member takes others.
		if fresh && attempt < 5 && errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			m.t.Fatalf("start embedded etcd: %v", err)
		}
		m.Etcd = e
		return
	}
}

// startOnce starts etcd on m's ports and waits until it is ready.
func (m *Member) startOnce() (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = m.dir
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.WarningUnaryRequestDuration = 300 * time.Millisecond
	cu, _ := url.Parse(m.Endpoints[0])
	pu, _ := url.Parse(m.peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, m.peer)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("not ready after 30s")
	}
}

// recordSecrets records every CHAP secret under api.SecretsPrefix when
// the suite scans for secrets.
func (m *Member) recordSecrets() {
	if os.Getenv(testsecrets.Env) == "" {
		return
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: m.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		m.t.Errorf("record the test's CHAP secrets: %v", err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, api.SecretsPrefix(""), clientv3.WithPrefix())
	if err != nil {
		m.t.Errorf("record the test's CHAP secrets: %v", err)
		return
	}
	var secrets []string
	for _, kv := range resp.Kvs {
		s := &sanbootv1.ChapSecret{}
		if proto.Unmarshal(kv.Value, s) == nil {
			secrets = append(secrets, s.GetSecret(), s.GetMutualSecret())
		}
	}
	if err := testsecrets.Record(secrets...); err != nil {
		m.t.Errorf("%v", err)
	}
}

// Client returns a client for the member, closed when the test ends.
func (m *Member) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: m.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Compact compacts the store up to its current revision.
func (m *Member) Compact(t testing.TB, c *clientv3.Client) int64 {
	t.Helper()
	resp, err := c.Get(context.Background(), "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(context.Background(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// FreeAddr returns a free 127.0.0.1:port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
