package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/internal/daemon/daemontest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/syncbuf"
)

// The agent as a service: settings from a --config file, READY=1 on a real
// notify socket only once it is registered and has resynced, /readyz and
// /metrics on --metrics-listen, STOPPING=1 and the lease revoked on stop.
func TestRunAsService(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx := context.Background()
	metrics := etcdtest.FreeAddr(t)
	conf := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(conf, []byte(strings.Join([]string{
		"# the agent's settings",
		"name: agent-9",
		"driver: fake",
		"etcd-endpoints: " + m.Endpoints[0],
		"store-dir: " + t.TempDir(),
		"portal:",
		"  - 127.0.0.1:3260",
		"lease-ttl: 2s",
		"log-format: json",
		"metrics-listen: " + metrics,
		"fake-capacity: 2TiB",
	}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := daemontest.Listen(t)
	var logs syncbuf.Buffer
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(rctx, []string{"--config", conf, "--workers=2"}, &logs) }()
	defer func() {
		cancel()
		<-done
	}()

	if msg := sock.Next(t, 60*time.Second); msg != "READY=1" {
		t.Fatalf("first notify message %q, want READY=1", msg)
	}
	// READY=1 came after registration and the first resync.
	if resp, err := cli.Get(ctx, api.AliveKey("agent-9")); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("READY=1 before the agent registered: %v", err)
	}
	if code, body, err := daemontest.Get(metrics, "/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz after READY=1: %d %q %v", code, body, err)
	}
	if code, _, err := daemontest.Get(metrics, "/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %v", code, err)
	}
	fams, err := daemontest.Scrape(metrics)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sanboot_store_bytes", map[string]string{"agent": "agent-9", "kind": "capacity"}, 2 << 40},
		{"sanboot_reconcile_queue_depth", map[string]string{"agent": "agent-9"}, 0},
		{"sanboot_reconcile_retries_total", map[string]string{"agent": "agent-9", "kind": "node"}, 0},
		{"sanboot_target_operations_total", map[string]string{"agent": "agent-9", "driver": "fake", "op": "list", "result": "error"}, 0},
	} {
		if v, ok := daemontest.Value(fams, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	// The first resync listed the targets at least once.
	if v, ok := daemontest.Value(fams, "sanboot_target_operations_total", map[string]string{"op": "list", "result": "ok"}); !ok || v < 1 {
		t.Errorf("target list operations = %v, want >= 1", v)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if msg := sock.Next(t, 10*time.Second); msg != "STOPPING=1" {
		t.Errorf("notify message on stop %q, want STOPPING=1", msg)
	}
	if resp, err := cli.Get(ctx, api.AliveKey("agent-9")); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("alive key still there after stop (lease not revoked): %v", err)
	}
	if !strings.Contains(logs.String(), `"msg":"registered"`) {
		t.Errorf("--log-format=json from the file not applied:\n%s", logs.String())
	}
}

func TestConfigFileErrors(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(conf, []byte("name: agent-1\ndriver: fake\nworkers: many\nportals: [127.0.0.1:3260]\n"), 0o644)
	_, err := parseFlags([]string{"--config", conf}, &syncbuf.Buffer{})
	if err == nil {
		t.Fatal("wrong key and value accepted")
	}
	for _, want := range []string{conf + ":3: workers", conf + `:4: unknown setting "portals"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// The commented default configuration that packages install loads.
func TestShippedConfig(t *testing.T) {
	c, err := parseFlags([]string{"--config", "../../../packaging/etc/agent.yaml", "--name=agent-1", "--driver=fake"}, &syncbuf.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.common.MetricsListen != "127.0.0.1:9481" || c.StoreDir != "/var/lib/sanboot" {
		t.Errorf("defaults changed by the shipped file: %+v", c)
	}
}
