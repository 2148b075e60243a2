package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// haNodes is how many nodes BenchmarkApplyHA applies.
const haNodes = 1000

// haPairs is how many times BenchmarkApplyHA applies to each kind of
// control plane, alternating (the medians are compared).
const haPairs = 3

// BenchmarkApplyHA: `sanbootctl apply -f FILE --wait` of 1,000 new nodes
// against a control plane of one member and against one of three (the
// same agent flags, sanbootctl and the agent given every member), each on
// fresh processes, alternately three times each (1, 3, 3, 1, 1, 3) in one
// run; the ratio of the medians is what replication across three members
// costs the user. Every member runs on this one host: the three share
// its cores and its disk, which separate hosts would not.
func BenchmarkApplyHA(b *testing.B) {
	for i := range b.N {
		took := map[int][]time.Duration{}
		for j := range 2 * haPairs {
			n := []int{1, 3, 3, 1}[j%4]
			dir := b.TempDir()
			sys := startCluster(b, n, "--driver", "fake", "--store-dir", filepath.Join(dir, "store"), "--workers", "16")
			project := fmt.Sprintf("ha-%d-%d-%d", n, i, j)
			file := filepath.Join(dir, project+".yaml")
			writeFleet(b, file, project, haNodes)
			d, _ := sys.ctl(b, "apply", "-f", file, "--wait", "--timeout", "30m")
			took[n] = append(took[n], d)
			sys.stop(b)
			b.Logf("apply -f --wait of %d new nodes, %d member(s): %v", haNodes, n, d.Round(time.Millisecond))
		}
		one, three := median(took[1]), median(took[3])
		ratio := float64(three) / float64(one)
		b.ReportMetric(ms(one), "1-member-ms")
		b.ReportMetric(ms(three), "3-members-ms")
		b.ReportMetric(ratio, "ratio-3-to-1")
		b.Logf("apply -f --wait of %d new nodes, medians of %d: 1 member %v, 3 members %v, ratio %.2f",
			haNodes, haPairs, one.Round(time.Millisecond), three.Round(time.Millisecond), ratio)
	}
}

// failoverRounds is how many times BenchmarkFailover kills the leader
// (SANBOOT_BENCH_FAILOVERS overrides it).
func failoverRounds(b *testing.B) int {
	if v := os.Getenv("SANBOOT_BENCH_FAILOVERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("SANBOOT_BENCH_FAILOVERS=%q: want a positive number", v)
		}
		return n
	}
	return 5
}

// failoverFleet is how many placed nodes BenchmarkFailover's cluster holds
// before its first kill: the next leader's scheduler reads them all.
const failoverFleet = 1000

// BenchmarkFailover: three members with their default election settings,
// an agent (fake driver) and 1,000 placed nodes. Each round kills (SIGKILL)
// the member that runs the controllers, creates a node through the API at
// once (a client that knows every member, as sanbootctl is given them),
// and measures the time from the kill to that node's placement by the next
// leader; then it starts the killed member again on its data and waits
// for three registered members. It reports the median and the longest
// round, and logs each round with its parts: when the dead leader's
// election key went (the next leader took over), how long the node's
// creation took (a write etcd had forwarded to a dead raft leader waits
// for etcd's request timeout), and whether the killed member also led
// etcd's raft.
func BenchmarkFailover(b *testing.B) {
	dir := b.TempDir()
	sys := startCluster(b, 3, "--driver", "fake", "--store-dir", filepath.Join(dir, "store"), "--workers", "16")
	sys.createImage(b, "default")
	sys.provision(b, "default", "golden", "fleet-", failoverFleet)
	rounds := failoverRounds(b)
	for i := range b.N {
		var took, deposed []time.Duration
		for r := range rounds {
			f := sys.failover(b, fmt.Sprintf("f-%d-%d", i, r))
			took, deposed = append(took, f.placed), append(deposed, f.deposed)
			b.Logf("round %d: kill -9 of the controllers' leader (raft leader too: %v): deposed after %v; node created after %v (the call took %v); placed after %v",
				r+1, f.raftLeader, f.deposed.Round(10*time.Millisecond), f.created.Round(10*time.Millisecond),
				f.createCall.Round(10*time.Millisecond), f.placed.Round(10*time.Millisecond))
		}
		slices.Sort(took)
		slices.Sort(deposed)
		med := took[len(took)/2]
		b.ReportMetric(ms(med), "median-ms")
		b.ReportMetric(ms(took[len(took)-1]), "max-ms")
		b.ReportMetric(ms(deposed[len(deposed)/2]), "median-deposed-ms")
		b.Logf("kill -9 of the leader to the next placement, %d rounds: median %v, min %v, max %v; to the next leader: median %v",
			rounds, med.Round(10*time.Millisecond), took[0].Round(10*time.Millisecond), took[len(took)-1].Round(10*time.Millisecond),
			deposed[len(deposed)/2].Round(10*time.Millisecond))
	}
}

// failoverRound is what one round of BenchmarkFailover measured, from
// the kill.
type failoverRound struct {
	deposed    time.Duration // the dead leader's election key deleted
	created    time.Duration // the PutNode call returned
	createCall time.Duration // how long that call took
	placed     time.Duration // the node's placement written
	raftLeader bool          // the killed member led etcd's raft
}

// failover is one round of BenchmarkFailover.
func (s *system) failover(b *testing.B, node string) failoverRound {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var victim *member
	var electionKey string
	waitFor(b, "a controllers' leader and three registered members", func(ctx context.Context) bool {
		resp, err := s.etcd.Get(ctx, api.ElectionPrefix, clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		ms, err := s.api.ListMembers(ctx, &sanbootv1.ListMembersRequest{})
		if err != nil || len(ms.Members) != len(s.members) {
			return false
		}
		for _, m := range s.members {
			if m.name == string(resp.Kvs[0].Value) {
				victim, electionKey = m, string(resp.Kvs[0].Key)
			}
		}
		return victim != nil
	})
	var f failoverRound
	if st, err := s.etcd.Status(ctx, "http://"+victim.client); err == nil {
		f.raftLeader = st.Leader == st.Header.MemberId
	}
	// Watch the node's placement and the leader's key through the
	// members that stay.
	var survivors []string
	for _, m := range s.members {
		if m != victim {
			survivors = append(survivors, "http://"+m.client)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: survivors, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	key := api.PlacementKey("default", node)
	from, err := cli.Get(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	placed, deposed := make(chan time.Time, 1), make(chan time.Time, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		for resp := range cli.Watch(wctx, key, clientv3.WithRev(from.Header.Revision+1)) {
			for _, ev := range resp.Events {
				var p sanbootv1.Placement
				if ev.Type == clientv3.EventTypePut && proto.Unmarshal(ev.Kv.Value, &p) == nil && p.Agent != "" {
					placed <- time.Now()
					return
				}
			}
		}
	}()
	go func() {
		for resp := range cli.Watch(wctx, electionKey, clientv3.WithRev(from.Header.Revision+1), clientv3.WithFilterPut()) {
			if len(resp.Events) > 0 {
				deposed <- time.Now()
				return
			}
		}
	}()

	victim.proc.Kill()
	killedAt := time.Now()
	if _, err := s.api.PutNode(ctx, &sanbootv1.PutNodeRequest{Mode: sanbootv1.PutMode_PUT_MODE_CREATE, Node: &sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: node}, Spec: &sanbootv1.NodeSpec{Image: "golden"}}}); err != nil {
		b.Fatalf("create node %s after the kill: %v", node, err)
	}
	f.created = time.Since(killedAt)
	f.createCall = f.created
	for _, c := range []struct {
		ch   chan time.Time
		into *time.Duration
		what string
	}{{placed, &f.placed, "placed"}, {deposed, &f.deposed, "the dead leader deposed"}} {
		select {
		case at := <-c.ch:
			*c.into = at.Sub(killedAt)
		case <-ctx.Done():
			b.Fatalf("after the kill of %s: never %s (node %s)", victim.name, c.what, node)
		}
	}
	s.startMember(b, victim)
	return f
}
