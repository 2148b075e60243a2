package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
	"github.com/sanboot/sanboot/internal/syncbuf"
)

func TestFlagDefaults(t *testing.T) {
	c, err := parseFlags([]string{"--name=agent-1", "--driver=fake"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "agent-1" || c.Driver != "fake" || strings.Join(c.Endpoints, ",") != "http://127.0.0.1:2379" ||
		c.StoreDir != "/var/lib/sanboot" || strings.Join(c.Portals, ",") != "127.0.0.1:3260" || len(c.AdvertisePortals) != 0 ||
		c.LeaseTTL != 10*time.Second || c.ResyncInterval != time.Minute || c.Workers != 8 || c.FakeCapacity != 1<<40 {
		t.Errorf("defaults = %+v", c)
	}
	c, err = parseFlags([]string{"--name=a", "--driver=tgt", "--store=rbd", "--rbd-pool=sanboot", "--ceph-user=agent-a"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Store != "rbd" || c.Ceph.Pool != "sanboot" || c.Ceph.User != "agent-a" || c.Ceph.Conf != "/etc/ceph/ceph.conf" || c.Ceph.MaxCloneDepth != 4 {
		t.Errorf("rbd flags parsed = %+v", c)
	}
	c, err = parseFlags([]string{"--name=a", "--driver=fake", "--portal=10.0.0.1:3260", "--portal=[::1]:3261",
		"--advertise-portal=192.0.2.1:3260", "--etcd-endpoints=http://10.0.0.1:2379, http://10.0.0.2:2379",
		"--fake-capacity=512GiB", "--workers=2", "--lease-ttl=3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Portals, ",") != "10.0.0.1:3260,[::1]:3261" || strings.Join(c.AdvertisePortals, ",") != "192.0.2.1:3260" ||
		len(c.Endpoints) != 2 || c.FakeCapacity != 512<<30 || c.Workers != 2 || c.LeaseTTL != 3*time.Second {
		t.Errorf("parsed = %+v", c)
	}
}

func TestFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--driver=fake"}, "--name: is required"},
		{[]string{"--name=Agent_1", "--driver=fake"}, "not a lowercase DNS label"},
		{[]string{"--name=a", "--configfs-root=/nonexistent"}, "--driver is required: no LIO at /nonexistent"},
		{[]string{"--name=a", "--driver=iet"}, `--driver="iet" is unknown: available drivers: lio, tgt, fake`},
		{[]string{"--name=a", "--driver=lio", "--configfs-root=sys/kernel/config/target"}, "use an absolute path"},
		{[]string{"--name=a", "--driver=tgt", "--tgtd=docker"}, `--tgtd="docker": use managed or system`},
		{[]string{"--name=a", "--driver=tgt", "--tgtd-control=0"}, "a managed tgtd takes 1 to 32767"},
		{[]string{"--name=a", "--driver=fake", "--portal=localhost:3260"}, "is not a portal"},
		{[]string{"--name=a", "--driver=fake", "--portal=127.0.0.1:3260", "--portal=127.0.0.1:3260"}, "given twice"},
		{[]string{"--name=a", "--driver=fake", "--advertise-portal=1.2.3.4"}, "is not a portal"},
		{[]string{"--name=a", "--driver=fake", "--etcd-endpoints=127.0.0.1:2379"}, "not a URL"},
		{[]string{"--name=a", "--driver=fake", "--etcd-endpoints=https://127.0.0.1:2379"}, "https needs --cert"},
		{[]string{"--name=a", "--driver=fake", "--etcd-endpoints=,"}, "--etcd-endpoints is empty"},
		{[]string{"--name=a", "--driver=fake", "--store-dir=var/lib"}, "absolute, clean path"},
		{[]string{"--name=a", "--driver=fake", "--store-dir=/etc/hostname"}, "is not a directory"},
		{[]string{"--name=a", "--driver=fake", "--lease-ttl=1s"}, "--lease-ttl=1s"},
		{[]string{"--name=a", "--driver=fake", "--resync-interval=10ms"}, "--resync-interval"},
		{[]string{"--name=a", "--driver=fake", "--workers=0"}, "--workers=0"},
		{[]string{"--name=a", "--driver=fake", "--fake-capacity=1TiBs"}, `"1TiBs" is not a size`},
		{[]string{"--name=a", "--driver=fake", "--fake-capacity=-1GiB"}, "is out of range"},
		{[]string{"--name=a", "--driver=fake", "--log-level=loud"}, "--log-level"},
		{[]string{"--name=a", "--driver=fake", "extra"}, "unexpected arguments"},
		{[]string{"--name=a", "--driver=tgt", "--store=ceph"}, `--store="ceph": use file or rbd`},
		{[]string{"--name=a", "--driver=tgt", "--store=rbd"}, "--store=rbd needs --rbd-pool"},
		{[]string{"--name=a", "--driver=lio", "--store=rbd", "--rbd-pool=p"}, "LIO can serve an RBD image only once the kernel's rbd module maps it"},
		{[]string{"--name=a", "--driver=fake", "--store=rbd", "--rbd-pool=p"}, "use --driver=tgt"},
		{[]string{"--name=a", "--driver=tgt", "--store=rbd", "--rbd-pool=p", "--ceph-conf=ceph.conf"}, "--ceph-conf=\"ceph.conf\""},
		{[]string{"--name=a", "--driver=tgt", "--store=rbd", "--rbd-pool=p", "--rbd-max-clone-depth=0"}, "--rbd-max-clone-depth=0"},
	}
	for _, tc := range cases {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestDefaultDriver: lio is the default where LIO's configfs directory
// exists; an explicit --driver wins.
func TestDefaultDriver(t *testing.T) {
	root := t.TempDir()
	c, err := parseFlags([]string{"--name=a", "--configfs-root=" + root}, io.Discard)
	if err != nil || c.Driver != "lio" || c.ConfigfsRoot != root {
		t.Errorf("with %s present: driver %q, root %q, err %v; want lio", root, c.Driver, c.ConfigfsRoot, err)
	}
	c, err = parseFlags([]string{"--name=a", "--driver=fake", "--configfs-root=" + root}, io.Discard)
	if err != nil || c.Driver != "fake" {
		t.Errorf("--driver=fake with LIO present: driver %q, err %v", c.Driver, err)
	}
}

// The whole program against a real etcd: registers, serves an assignment,
// revokes its lease on stop, and after a restart registers again and keeps
// serving its assignments.
func TestRunRegistersServesAndRestarts(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx := context.Background()
	args := []string{"--name=agent-1", "--driver=fake", "--etcd-endpoints=" + m.Endpoints[0],
		"--store-dir=" + t.TempDir(), "--advertise-portal=10.0.2.2:3260", "--lease-ttl=2s", "--metrics-listen=127.0.0.1:0"}
	var logs syncbuf.Buffer
	start := func() (stop func()) {
		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(c, args, &logs) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}
	alive := func() bool {
		resp, err := cli.Get(ctx, api.AliveKey("agent-1"))
		return err == nil && len(resp.Kvs) == 1
	}
	ready := func(gen int64) bool {
		st := &sanbootv1.NodeStatus{}
		_, err := kv.Get(ctx, cli, api.NodeStatusKey("default", "node-01", "agent-1"), st)
		return err == nil && st.Phase == api.PhaseReady && st.ObservedGeneration == gen &&
			st.TargetIqn == api.TargetIQN("", "default", "node-01") && len(st.Portals) == 1 && st.Portals[0] == "10.0.2.2:3260"
	}
	put := func(key string, msg proto.Message) {
		b, _ := proto.Marshal(msg)
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			t.Fatal(err)
		}
	}

	stop := start()
	eventually.True(t, "registered", alive)
	rec := &sanbootv1.AgentRecord{}
	if _, err := kv.Get(ctx, cli, api.AgentKey("agent-1"), rec); err != nil || rec.Driver != "fake" || rec.CapacityBytes != 1<<40 {
		t.Fatalf("agent record %v, %v", rec, err)
	}
	put(api.ImageKey("default", "golden"), &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "golden", Generation: 1},
		Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 30}})
	a := &sanbootv1.Assignment{Project: "default", Node: "node-01", Generation: 1, Spec: &sanbootv1.NodeSpec{Image: "golden"},
		InitiatorIqn: api.DefaultInitiatorIQN("default", "node-01"), TargetIqn: api.TargetIQN("", "default", "node-01")}
	put(api.AssignKey("agent-1", "default", "node-01"), a)
	eventually.True(t, "node Ready", func() bool { return ready(1) })

	stop()
	if alive() {
		t.Errorf("alive key still there after a clean stop: the lease must be revoked")
	}
	if resp, err := cli.Get(ctx, api.AssignKey("agent-1", "default", "node-01")); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("assignment gone after stop: %v", err)
	}

	stop = start()
	defer stop()
	eventually.True(t, "registered again", alive)
	a.Generation = 2
	put(api.AssignKey("agent-1", "default", "node-01"), a)
	eventually.True(t, "node Ready at generation 2 after the restart", func() bool { return ready(2) })
	if !strings.Contains(logs.String(), "lease revoked") {
		t.Errorf("logs do not say the lease was revoked:\n%s", logs.String())
	}
}
