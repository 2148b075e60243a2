package controlplane_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
	"github.com/sanboot/sanboot/ctl/cli"
	"github.com/sanboot/sanboot/internal/dial"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/lease"
	"github.com/sanboot/sanboot/internal/proctest"
)

// memberEnv, when set, makes the test binary a control-plane member
// process (see runMemberProcess) instead of running tests: the HA test
// kills members with SIGKILL, which needs processes of their own.
const memberEnv = "SANBOOT_TEST_MEMBER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(memberEnv); spec != "" {
		os.Exit(runMemberProcess(spec))
	}
	os.Exit(m.Run())
}

// memberSpec is one member's place in a test cluster.
type memberSpec struct {
	Name, Dir, Client, Peer, API, Initial, State string
}

func (s memberSpec) encode() string {
	return strings.Join([]string{s.Name, s.Dir, s.Client, s.Peer, s.API, s.Initial, s.State}, "|")
}

// runMemberProcess runs controlplane.Run as sanboot-controlplane would,
// with etcd's cluster flags taken from spec, until SIGTERM.
func runMemberProcess(spec string) int {
	f := strings.Split(spec, "|")
	if len(f) != 7 {
		fmt.Fprintf(os.Stderr, "%s: %q has %d fields, want 7\n", memberEnv, spec, len(f))
		return 2
	}
	cfg := controlplane.DefaultConfig()
	cfg.Member.Name, cfg.Member.DataDir = f[0], f[1]
	cfg.Member.Client.ListenURLs = []url.URL{{Scheme: "http", Host: f[2]}}
	cfg.Member.Peer.ListenURLs = []url.URL{{Scheme: "http", Host: f[3]}}
	cfg.APIListen = f[4]
	cfg.Member.Cluster.Initial, cfg.Member.Cluster.State = f[5], f[6]
	cfg.BootListen = ""
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("member", f[0])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := controlplane.Run(ctx, cfg); err != nil {
		cfg.Log.Error("member failed", "err", err)
		return 1
	}
	return 0
}

// haCluster is a cluster of member processes on loopback.
type haCluster struct {
	t       *testing.T
	members map[string]*memberProc
	cli     *clientv3.Client // over every member's client URL
}

type memberProc struct {
	spec memberSpec
	*proctest.Proc
}

// startThree starts members m1, m2 and m3 and waits until one leads; ctx
// bounds the test. With -short the test is skipped: it runs that many
// member processes ("three", or "four" with a replacement).
func startThree(t *testing.T, processes string) (*haCluster, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs " + processes + " member processes; run without -short")
	}
	c := startCluster(t, "m1", "m2", "m3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	eventually.True(t, "a member leads", func() bool { return c.leader(ctx) != "" })
	return c, ctx
}

func startCluster(t *testing.T, names ...string) *haCluster {
	t.Helper()
	c := &haCluster{t: t, members: map[string]*memberProc{}}
	var initial, endpoints []string
	specs := make([]memberSpec, len(names))
	addrs := etcdtest.FreeAddrs(t, 3*len(names))
	for i, name := range names {
		specs[i] = memberSpec{Name: name, Dir: filepath.Join(t.TempDir(), name), Client: addrs[3*i],
			Peer: addrs[3*i+1], API: addrs[3*i+2], State: "new"}
		initial = append(initial, name+"=http://"+specs[i].Peer)
		endpoints = append(endpoints, "http://"+specs[i].Client)
	}
	for _, s := range specs {
		s.Initial = strings.Join(initial, ",")
		c.start(s)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	c.cli = cli
	return c
}

// start runs member s in a process of its own: this test binary again
// (see TestMain). It gets SIGTERM when the test ends, and its log's end is
// printed if the test failed.
func (c *haCluster) start(s memberSpec) {
	c.t.Helper()
	c.members[s.Name] = &memberProc{spec: s, Proc: proctest.Start(c.t, proctest.Options{
		Dir: c.t.TempDir(), Name: s.Name, Path: os.Args[0], Args: []string{"-test.run=^$"},
		Env: []string{memberEnv + "=" + s.encode()}, StopSignal: syscall.SIGTERM})}
}

// leader is the member that runs the controllers now (the election's
// oldest candidate), or "" when none does.
func (c *haCluster) leader(ctx context.Context) string {
	resp, err := c.cli.Get(ctx, api.ElectionPrefix, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// dial connects as sanbootctl does (package dial) to the API endpoints.
func (c *haCluster) dial(t *testing.T, endpoints ...string) sanbootv1.SanbootClient {
	conn, err := dial.Dial(dial.Options{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return sanbootv1.NewSanbootClient(conn)
}

// Three members: the API answers on a follower, whose writes the leader's
// scheduler places; the leader is killed (SIGKILL) while nodes are being
// created and placed; another member takes over. Every node ends up
// placed and Ready, and no node was ever assigned to two agents or
// placed twice (read from etcd's history of every write).
func TestHALeaderKilledMidPlacement(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three member processes; run without -short")
	}
	const nodes = 300
	c := startCluster(t, "m1", "m2", "m3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var first string
	eventually.True(t, "a member leads", func() bool { first = c.leader(ctx); return first != "" })
	// The client knows every member, the leader last: it talks to a
	// follower (pick_first) and must never see an error.
	var endpoints []string
	for name, m := range c.members {
		if name != first {
			endpoints = append(endpoints, m.spec.API)
		}
	}
	follower := endpoints[0]
	endpoints = append(endpoints, c.members[first].spec.API)
	t.Logf("leader %s; writing through a follower at %s", first, follower)
	client := c.dial(t, endpoints...)
	eventually.True(t, "three members registered", func() bool {
		resp, err := client.ListMembers(ctx, &sanbootv1.ListMembersRequest{})
		return err == nil && len(resp.Members) == 3
	})

	c.imageOnAgents(ctx, t, client, "a1", "a2", "a3")

	// Create the nodes through the follower; kill the leader once a third
	// of them are placed.
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Go(func() {
		for i := range nodes {
			n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: fmt.Sprintf("n%03d", i)}, Spec: &sanbootv1.NodeSpec{Image: "img"}}
			if _, err := client.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
				errs <- fmt.Errorf("PutNode %s: %w", n.Metadata.Name, err)
				return
			}
		}
	})
	eventually.True(t, "a third of the nodes placed", func() bool { return c.count(ctx, api.AssignPrefix("")) >= nodes/3 })
	killed := c.members[first]
	killed.Kill()
	killedAt, before := time.Now(), c.count(ctx, api.AssignPrefix(""))
	t.Logf("killed leader %s with %d assignments written", first, before)
	eventually.True(t, "a placement after the kill", func() bool { return c.count(ctx, api.AssignPrefix("")) > before })
	// A figure, not a check: the others depose the dead leader once its
	// etcd member failed three probes (leader.Config.Probe).
	t.Logf("first placement after the kill: %s later", time.Since(killedAt).Round(10*time.Millisecond))
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("creating nodes through a follower while the leader died: %v", err)
	default:
	}

	var second string
	eventually.True(t, "another member leads", func() bool { second = c.leader(ctx); return second != "" && second != first })
	eventually.True(t, "every node Ready", allReady(ctx, client, nodes))
	t.Logf("new leader %s placed the rest", second)

	// etcd's history: every assignment and placement ever written.
	assigned := map[string]map[string]bool{} // node -> agents
	placed := map[string]map[string]bool{}
	c.history(ctx, api.AssignPrefix(""), func(key string, _ []byte) {
		rest := strings.TrimPrefix(key, api.AssignPrefix(""))
		agent, node, _ := strings.Cut(rest, "/")
		if assigned[node] == nil {
			assigned[node] = map[string]bool{}
		}
		assigned[node][agent] = true
	})
	c.history(ctx, api.PlacementKey("default", ""), func(key string, v []byte) {
		var p sanbootv1.Placement
		if err := proto.Unmarshal(v, &p); err != nil || p.Agent == "" {
			return
		}
		if placed[key] == nil {
			placed[key] = map[string]bool{}
		}
		placed[key][p.Agent] = true
	})
	if len(assigned) != nodes || len(placed) != nodes {
		t.Fatalf("history: %d nodes assigned, %d placed; want %d", len(assigned), len(placed), nodes)
	}
	for node, agents := range assigned {
		if len(agents) != 1 {
			t.Errorf("node %s was assigned to %d agents: %v", node, len(agents), agents)
		}
	}
	for node, agents := range placed {
		if len(agents) != 1 {
			t.Errorf("node %s was placed on %d agents: %v", node, len(agents), agents)
		}
	}
}

// imageOnAgents registers FAKE agents (fakeagent) that serve until ctx
// ends, then puts image "img" and makes it Ready on each of them.
func (c *haCluster) imageOnAgents(ctx context.Context, t *testing.T, client sanbootv1.SanbootClient, names ...string) {
	t.Helper()
	var agents []*fakeagent.Agent
	for _, name := range names {
		a, err := fakeagent.Start(ctx, c.cli, name, 10)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	if _, err := client.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		if err := a.SetReplica(ctx, "default", "img", api.ReplicaReady); err != nil {
			t.Fatal(err)
		}
	}
}

// allReady says whether the API lists n nodes, every one Ready.
func allReady(ctx context.Context, client sanbootv1.SanbootClient, n int) func() bool {
	return func() bool {
		resp, err := client.ListNodes(ctx, &sanbootv1.ListRequest{})
		if err != nil || len(resp.Nodes) != n {
			return false
		}
		for _, nd := range resp.Nodes {
			if nd.GetStatus().GetPhase() != api.PhaseReady {
				return false
			}
		}
		return true
	}
}

func (c *haCluster) count(ctx context.Context, prefix string) int64 {
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return -1
	}
	return resp.Count
}

// history calls put for every value ever written under prefix (etcd keeps
// every revision: members compact nothing on their own).
func (c *haCluster) history(ctx context.Context, prefix string, put func(key string, value []byte)) {
	c.t.Helper()
	now, err := c.cli.Get(ctx, "history-probe")
	if err != nil {
		c.t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := c.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1))
	// A progress notification comes once the watch has sent all history.
	go func() {
		for wctx.Err() == nil {
			c.cli.RequestProgress(wctx)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	for resp := range w {
		if err := resp.Err(); err != nil {
			c.t.Fatalf("watch history of %s: %v", prefix, err)
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypePut {
				put(string(ev.Kv.Key), ev.Kv.Value)
			}
		}
		if resp.IsProgressNotify() && resp.Header.Revision >= now.Header.Revision {
			return
		}
	}
	c.t.Fatalf("watch history of %s ended: %v", prefix, ctx.Err())
}

// A client and an agent that know every member lose nothing when the
// member they talk to is killed (SIGKILL): every call succeeds (gRPC
// retries the one that failed, on another member), and the agent's lease,
// kept through an etcd client over every member, is never lost.
func TestHAClientAndAgentSurviveAMembersDeath(t *testing.T) {
	c, ctx := startThree(t, "three")
	client := c.dial(t, c.members["m1"].spec.API, c.members["m2"].spec.API, c.members["m3"].spec.API)

	// The agent's registration, as sanboot-agent keeps it (package lease).
	var etcdEndpoints []string
	for _, name := range []string{"m1", "m2", "m3"} {
		etcdEndpoints = append(etcdEndpoints, "http://"+c.members[name].spec.Client)
	}
	agentCli, err := clientv3.New(clientv3.Config{Endpoints: etcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer agentCli.Close()
	keeper := lease.New(agentCli, lease.Config{What: "agent a1", TTL: 10 * time.Second, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Register: func(ctx context.Context, l, _ clientv3.LeaseID) error {
			_, err := agentCli.Put(ctx, api.AliveKey("a1"), "", clientv3.WithLease(l))
			return err
		}})
	kctx, stopKeeper := context.WithCancel(ctx)
	defer stopKeeper()
	go keeper.Run(kctx)
	select {
	case <-keeper.Ready():
	case <-ctx.Done():
		t.Fatal("the agent never registered")
	}
	first := keeper.Lease()
	watchStart, err := c.cli.Get(ctx, api.AliveKey("a1"))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := client.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	call := func(i int) {
		t.Helper()
		name := fmt.Sprintf("n%03d", i)
		if _, err := client.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: &sanbootv1.Node{
			Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.NodeSpec{Image: "img"}}}); err != nil {
			t.Fatalf("PutNode %s: %v", name, err)
		}
		if _, err := client.GetNode(ctx, &sanbootv1.GetRequest{Name: name}); err != nil {
			t.Fatalf("GetNode %s: %v", name, err)
		}
		if _, err := client.ListMembers(ctx, &sanbootv1.ListMembersRequest{}); err != nil {
			t.Fatalf("ListMembers: %v", err)
		}
		calls += 3
	}
	for i := range 20 {
		call(i)
	}
	c.members["m1"].Kill()
	t.Log("killed m1, the member the client talked to")
	for i := 20; i < 80; i++ {
		call(i)
	}
	t.Logf("%d calls, none failed", calls)

	// The lease held: the agent's key was never deleted, its lease is the
	// first one.
	if got := keeper.Lease(); got != first {
		t.Errorf("the agent's lease changed from %x to %x: it was lost", first, got)
	}
	now, err := c.cli.Get(ctx, api.AliveKey("a1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(now.Kvs) != 1 || now.Kvs[0].CreateRevision != watchStart.Kvs[0].CreateRevision {
		t.Errorf("the agent's alive key was deleted and written again (or is gone): %v", now.Kvs)
	}
}

// ctl runs sanbootctl's command tree against endpoints; it returns the exit
// code, stdout and stderr.
func ctl(ctx context.Context, endpoints []string, args ...string) (int, string, string) {
	var out, errOut strings.Builder
	env := map[string]string{"SANBOOT_ENDPOINTS": strings.Join(endpoints, ","), "HOME": os.TempDir()}
	code := cli.Run(ctx, cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, args)
	return code, out.String(), errOut.String()
}

// The runbook for a dead member's host, with sanbootctl member: list shows
// the dead member unhealthy and the quorum at risk; adding its replacement
// is refused until the dead one is removed (etcd's rule); the new member
// joins as a learner (promotion is refused before it runs and has caught
// up), starts with the flags add printed, is promoted; a removal that
// would break quorum is refused.
func TestHAMemberReplaceDeadHost(t *testing.T) {
	c, ctx := startThree(t, "four")
	endpoints := []string{c.members["m1"].spec.API, c.members["m2"].spec.API, c.members["m3"].spec.API}
	must := func(args ...string) string {
		t.Helper()
		code, out, errOut := ctl(ctx, endpoints, args...)
		if code != 0 {
			t.Fatalf("sanbootctl %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	var out string
	eventually.True(t, "member list: 3 healthy", func() bool {
		out = must("member", "list")
		return strings.Count(out, " healthy ") == 3 && strings.Contains(out, "quorum: 3 of 3 voting members healthy, 2 needed")
	})
	t.Logf("member list:\n%s", out)

	c.members["m3"].Kill()
	eventually.True(t, "member list: m3 unhealthy, quorum at risk", func() bool {
		out = must("get", "members", "-o", "wide")
		return regexpLine(out, `^m3\s+UNHEALTHY`) && strings.Contains(out, "quorum: 2 of 3 voting members healthy, 2 needed; AT RISK")
	})
	t.Logf("after m3's death:\n%s", out)

	// The new host: m4. etcd adds a member only while every voter is
	// connected: the dead one goes first, then m4 joins, a learner first.
	addrs := etcdtest.FreeAddrs(t, 3)
	spec := memberSpec{Name: "m4", Dir: filepath.Join(t.TempDir(), "m4"), Client: addrs[0], Peer: addrs[1], API: addrs[2], State: "existing"}
	code, _, errOut := ctl(ctx, endpoints, "member", "add", "m4", "--peer-urls", "http://"+spec.Peer)
	if code == 0 || !strings.Contains(errOut, "remove it first") {
		t.Fatalf("member add with m3 dead: exit %d, %s", code, errOut)
	}
	must("member", "remove", "m3")
	eventually.True(t, "member add m4", func() bool {
		// etcd wants the voters connected for a while (its health interval)
		code, out, errOut = ctl(ctx, endpoints, "member", "add", "m4", "--peer-urls", "http://"+spec.Peer)
		if code != 0 {
			t.Logf("member add: %s", errOut)
		}
		return code == 0
	})
	t.Logf("member add:\n%s", out)
	for _, want := range []string{"--name=m4", "--initial-cluster-state=existing", "m4=http://" + spec.Peer} {
		if !strings.Contains(out, want) {
			t.Fatalf("member add printed no %q:\n%s", want, out)
		}
	}
	_, after, _ := strings.Cut(out, "--initial-cluster=")
	spec.Initial, _, _ = strings.Cut(after, " ")
	code, _, errOut = ctl(ctx, endpoints, "member", "promote", "m4")
	if code == 0 || !strings.Contains(errOut, "has not caught up") {
		t.Fatalf("promote before m4 started: exit %d, %s", code, errOut)
	}
	t.Logf("promote refused: %s", strings.TrimSpace(errOut))
	c.start(spec)
	eventually.True(t, "m4 promoted once caught up", func() bool {
		code, _, _ := ctl(ctx, endpoints, "member", "promote", "m4")
		return code == 0
	})
	eventually.True(t, "member list: m1, m2, m4 healthy voters", func() bool {
		out = must("member", "list")
		return strings.Count(out, " healthy ") == 3 && !strings.Contains(out, "m3") && strings.Contains(out, "quorum: 3 of 3 voting members healthy")
	})
	t.Logf("after replacing m3 with m4:\n%s", out)

	// Lose m2 too: removing a healthy member now would leave one healthy
	// voter of two.
	c.members["m2"].Kill()
	eventually.True(t, "m2 unhealthy", func() bool {
		_, out, _ := ctl(ctx, endpoints, "member", "list")
		return regexpLine(out, `^m2\s+UNHEALTHY`)
	})
	code, _, errOut = ctl(ctx, endpoints, "member", "remove", "m1")
	if code == 0 || !strings.Contains(errOut, "fewer than a quorum") || !strings.Contains(errOut, "--force") {
		t.Fatalf("removing m1 with m2 dead: exit %d, %s", code, errOut)
	}
	t.Logf("remove refused: %s", strings.TrimSpace(errOut))
}

func regexpLine(text, pattern string) bool {
	return regexp.MustCompile(`(?m)` + pattern).MatchString(text)
}

// A rolling restart (an upgrade): every member is stopped (SIGTERM) and
// started again on its data, one after another, while a client that knows
// every member keeps calling: not one call fails, and writes made through
// any member are placed.
func TestHARollingRestart(t *testing.T) {
	c, ctx := startThree(t, "three")
	client := c.dial(t, c.members["m1"].spec.API, c.members["m2"].spec.API, c.members["m3"].spec.API)
	c.imageOnAgents(ctx, t, client, "a1")

	stop := make(chan struct{})
	var calls, nodes int
	var callErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("n%04d", i)
			if _, err := client.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: &sanbootv1.Node{
				Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.NodeSpec{Image: "img"}}}); err != nil {
				callErr = fmt.Errorf("PutNode %s: %w", name, err)
				return
			}
			nodes++
			if _, err := client.ListMembers(ctx, &sanbootv1.ListMembersRequest{}); err != nil {
				callErr = fmt.Errorf("ListMembers: %w", err)
				return
			}
			calls += 2
			time.Sleep(20 * time.Millisecond)
		}
	})
	for _, name := range []string{"m1", "m2", "m3"} {
		m := c.members[name]
		m.Stop()
		t.Logf("stopped %s", name)
		c.start(m.spec)
		eventually.True(t, name+" back and serving", func() bool {
			conn := c.dial(t, m.spec.API)
			resp, err := conn.ListMembers(ctx, &sanbootv1.ListMembersRequest{})
			return err == nil && len(resp.Members) == 3
		})
		t.Logf("restarted %s", name)
	}
	close(stop)
	wg.Wait()
	if callErr != nil {
		t.Fatalf("after %d good calls: %v", calls, callErr)
	}
	t.Logf("%d calls during the rolling restart, none failed", calls)
	eventually.True(t, "every node Ready", allReady(ctx, client, nodes))
}

// A client given one member learns the others from their registrations:
// sanbootctl (its command tree, as the binary runs it) keeps them for its
// next run, and a connection of package dial uses them at once. When the
// one configured member is killed (SIGKILL), the next call of the
// connection succeeds, and so does the next sanbootctl run, which prints
// nothing on stderr.
func TestHAClientDiscoversMembers(t *testing.T) {
	c, ctx := startThree(t, "three")
	one := []string{c.members["m1"].spec.API}
	home := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var out, errOut strings.Builder
		env := map[string]string{"SANBOOT_ENDPOINTS": one[0], "HOME": home}
		code := cli.Run(ctx, cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, args)
		return code, out.String(), errOut.String()
	}
	eventually.True(t, "sanbootctl learned the three members", func() bool {
		if code, _, errOut := run("get", "nodes"); code != 0 {
			t.Fatalf("sanbootctl get nodes: exit %d: %s", code, errOut)
		}
		files, _ := filepath.Glob(filepath.Join(home, ".cache", "sanboot", "endpoints-*.json"))
		if len(files) != 1 {
			return false
		}
		b, err := os.ReadFile(files[0])
		return err == nil && strings.Count(string(b), "127.0.0.1:") == 1+3 // configured, then the three
	})

	learned := make(chan []string, 100)
	conn, err := dial.Dial(dial.Options{Endpoints: one, Discover: true, OnDiscover: func(eps []string, err error) {
		if err == nil {
			learned <- eps
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually.True(t, "the connection learned the three members", func() bool {
		select {
		case eps := <-learned:
			return len(eps) == 3
		default:
			return false
		}
	})
	client := sanbootv1.NewSanbootClient(conn)
	if _, err := client.ListNodes(ctx, &sanbootv1.ListRequest{}); err != nil {
		t.Fatal(err)
	}

	c.members["m1"].Kill()
	t.Log("killed m1, the one configured member")
	if _, err := client.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}}); err != nil {
		t.Fatalf("the connection's next call after m1's death: %v", err)
	}
	code, out, errOut := run("get", "images")
	if code != 0 || errOut != "" || !strings.Contains(out, "img") {
		t.Fatalf("sanbootctl get images with only m1, dead, configured: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Logf("after m1's death, sanbootctl given only m1:\n%s", out)
}

// A member removed from the cluster while it runs ends its process with
// success, as etcd does: it does not linger answering every call with
// "raft: stopped" (clients that list it would see those errors).
func TestHARemovedMemberStops(t *testing.T) {
	c, ctx := startThree(t, "three")
	endpoints := []string{c.members["m1"].spec.API, c.members["m2"].spec.API}
	eventually.True(t, "member list: 3 healthy", func() bool {
		code, out, _ := ctl(ctx, endpoints, "member", "list")
		return code == 0 && strings.Count(out, " healthy ") == 3
	})
	eventually.True(t, "member remove m3", func() bool {
		// etcd wants the voters connected for a while (its health interval)
		code, _, errOut := ctl(ctx, endpoints, "member", "remove", "m3")
		if code != 0 {
			t.Logf("member remove: %s", errOut)
		}
		return code == 0
	})
	m3 := c.members["m3"]
	select {
	case <-m3.Done():
	case <-time.After(time.Minute):
		t.Fatal("m3, removed, still runs a minute later")
	}
	if code := m3.ExitCode(); code != 0 {
		t.Errorf("m3, removed, exited %d, want 0", code)
	}
	if log := m3.Log(); !strings.Contains(log, "removed from the cluster") {
		t.Errorf("m3's log does not say it was removed:\n%s", proctest.Tail(log, 20))
	}
}

// With quorum lost (two of three members killed), the last member answers
// reads and writes at once that it has no etcd leader, naming itself,
// instead of holding them until the caller's deadline (a minute here);
// then it stops on SIGTERM (proctest fails the test if not within a
// minute: the etcd election's resign used to hold it for ever).
func TestHAQuorumLostRefusesCalls(t *testing.T) {
	c, ctx := startThree(t, "three")
	client := c.dial(t, c.members["m1"].spec.API)
	eventually.True(t, "m1 answers", func() bool {
		_, err := client.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
		return err == nil
	})
	c.members["m2"].Kill()
	c.members["m3"].Kill()
	for name, call := range map[string]func(context.Context) error{
		"read": func(ctx context.Context) error {
			_, err := client.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
			return err
		},
		"write": func(ctx context.Context) error {
			_, err := client.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
				Metadata: &sanbootv1.ObjectMeta{Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}})
			return err
		},
	} {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := call(cctx)
		cancel()
		if !dial.IsNoLeader(err) || !strings.Contains(err.Error(), "m1 has no etcd leader") {
			t.Errorf("%s with quorum lost: %v; want m1's NoLeader answer", name, err)
		}
	}
}
