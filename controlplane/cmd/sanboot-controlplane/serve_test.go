package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/daemon"
	"github.com/sanboot/sanboot/internal/daemon/daemontest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
)

// The member as a service: READY=1 on a real notify socket only once the
// API answers, /readyz, /metrics parsed with the Prometheus text parser
// and its node and agent gauges equal to what the API lists, STOPPING=1
// on stop.
func TestServe(t *testing.T) {
	cfg := cptest.MemberConfig(t, "cp1")
	common := daemon.Common{MetricsListen: etcdtest.FreeAddr(t)}
	sock := daemontest.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, common) }()
	defer func() {
		cancel()
		<-done
	}()

	if msg := sock.Next(t, 90*time.Second); msg != "READY=1" {
		t.Fatalf("first notify message %q, want READY=1", msg)
	}
	// At READY=1 the API answers at once, without waiting for a connection.
	conn, err := grpc.NewClient(cfg.APIListen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	h, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{})
	hcancel()
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check right after READY=1: %v %v", h, err)
	}
	if code, body, err := daemontest.Get(common.MetricsListen, "/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz after READY=1: %d %q %v", code, body, err)
	}

	// Agents: a Ready, b Unavailable; nodes: two Ready on a, one Pending.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.Member.Client.ListenURLs[0].String()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	actx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	a, err := fakeagent.Start(actx, cli, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fakeagent.Register(actx, cli, "b", 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	c := sanbootv1.NewSanbootClient(conn)
	for _, im := range []string{"img", "unreplicated"} {
		if _, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Name: im}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SetReplica(ctx, "default", "img", api.ReplicaReady); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ name, image string }{{"n1", "img"}, {"n2", "img"}, {"n3", "unreplicated"}} {
		if _, err := c.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: &sanbootv1.Node{
			Metadata: &sanbootv1.ObjectMeta{Name: n.name}, Spec: &sanbootv1.NodeSpec{Image: n.image}}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, "n1 and n2 Ready", func() bool {
		l, err := c.ListNodes(ctx, &sanbootv1.ListRequest{AllProjects: true})
		ready := 0
		for _, n := range l.GetNodes() {
			if n.GetStatus().GetPhase() == api.PhaseReady {
				ready++
			}
		}
		return err == nil && ready == 2
	})

	// The gauges say what the API lists.
	var last string
	eventually.True(t, "the gauges to match the API", func() bool {
		fams, err := daemontest.Scrape(common.MetricsListen)
		if err != nil {
			last = err.Error()
			return false
		}
		nodes, err := c.ListNodes(ctx, &sanbootv1.ListRequest{AllProjects: true})
		if err != nil {
			return false
		}
		agents, err := c.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
		if err != nil {
			return false
		}
		want := map[[2]string]float64{}
		for _, n := range nodes.GetNodes() {
			want[[2]string{n.GetMetadata().GetProject(), n.GetStatus().GetPhase()}]++
		}
		got := map[[2]string]float64{}
		for _, m := range fams["sanboot_nodes"].GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			got[[2]string{l["project"], l["phase"]}] = m.GetGauge().GetValue()
		}
		if len(got) != len(want) || len(want) != 2 {
			last = "nodes: got " + fmtMap(got) + " want " + fmtMap(want)
			return false
		}
		for k, v := range want {
			if got[k] != v {
				last = "nodes: got " + fmtMap(got) + " want " + fmtMap(want)
				return false
			}
		}
		wantAgents := map[string]float64{api.AgentReady: 0, api.AgentUnavailable: 0}
		for _, ag := range agents.GetAgents() {
			wantAgents[ag.GetState()]++
		}
		for st, v := range wantAgents {
			if g, _ := daemontest.Value(fams, "sanboot_agents", map[string]string{"state": st}); g != v || v != 1 {
				last = "agents " + st
				return false
			}
		}
		return true
	}, eventually.Seen(func() string { return last }))

	fams, err := daemontest.Scrape(common.MetricsListen)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := daemontest.Value(fams, "sanboot_api_requests_total", map[string]string{"method": "/sanboot.v1.Sanboot/PutNode", "code": "OK"}); v != 3 {
		t.Errorf("PutNode requests counted: %v, want 3", v)
	}
	if v, ok := daemontest.Value(fams, "etcd_server_has_leader", nil); !ok || v != 1 {
		t.Errorf("embedded etcd's etcd_server_has_leader = %v (found %v), want 1", v, ok)
	}
	// The histogram is fed by this member's watch, which may see the Ready
	// status after the gauges above did.
	eventually.True(t, "a provision latency observed", func() bool {
		fams, err := daemontest.Scrape(common.MetricsListen)
		if err != nil {
			last = err.Error()
			return false
		}
		f := fams["sanboot_node_provision_seconds"]
		last = f.String()
		return f != nil && len(f.GetMetric()) > 0 && f.GetMetric()[0].GetHistogram().GetSampleCount() >= 1
	}, eventually.Seen(func() string { return last }))
	if _, ok := daemontest.Value(fams, "sanboot_scheduler_queue_depth", nil); !ok {
		t.Error("no sanboot_scheduler_queue_depth")
	}

	stopAgents()
	cli.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after a clean stop: %v", err)
	}
	done <- nil
	if msg := sock.Next(t, 10*time.Second); msg != "STOPPING=1" {
		t.Errorf("notify message on stop %q, want STOPPING=1", msg)
	}
}

func fmtMap(m map[[2]string]float64) string {
	s := "{"
	for k, v := range m {
		s += fmt.Sprintf("%s/%s=%v ", k[0], k[1], v)
	}
	return s + "}"
}
