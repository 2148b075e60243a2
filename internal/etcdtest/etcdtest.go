// Package etcdtest starts a real embedded etcd member for tests: one member,
// random loopback ports, data in t.TempDir(). It is the same etcd the
// control plane embeds, not a fake.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
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
			addrs := FreeAddrs(m.t, 2)
			m.Endpoints = []string{"http://" + addrs[0]}
			m.peer = "http://" + addrs[1]
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

// FreeAddr returns a free 127.0.0.1:port (see FreeAddrs).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// FreeAddrs returns n distinct 127.0.0.1:port addresses whose ports are
// free now, for a program that binds them later. A port is free when it
// is returned, not when the program binds it: something else may take it
// in between. The ports are chosen at random below the kernel's ephemeral
// range (ip_local_port_range, 32768 and up by default), from which the
// kernel takes the local port of every outgoing connection and of every
// listener on port 0: the connections of every test running beside this
// one cannot take them, only another test choosing the same port in the
// same moment (hack/lib.sh's free_port chooses so too). Start still
// starts a member again on other ports when its port was taken.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	low := ephemeralLow()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(held) < n; tries++ {
		port := 0 // the kernel's choice, when there is no room below its range
		if low > firstPort+1000 && tries < 1000 {
			port = firstPort + rand.IntN(low-firstPort)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		switch {
		case err == nil:
			held = append(held, l) // held until all n are found: distinct
		case port == 0:
			t.Fatalf("find a free port: %v", err)
		}
	}
	out := make([]string, n)
	for i, l := range held {
		out[i] = l.Addr().String()
	}
	return out
}

// firstPort is the lowest port FreeAddrs chooses.
const firstPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return low
}
