package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/etcdtest"
)

const (
	nodesPerRun = 1000
	concurrency = 64
)

func BenchmarkProvision(b *testing.B) {
	sys := startSystem(b)
	for i := range b.N {
		project := "bench-" + strconv.Itoa(i)
		sys.createImage(b, project)
		rev0 := sys.revision(b)
		took, lat := sys.provision(b, project, nodesPerRun)
		txns := sys.revision(b) - rev0

		raw := rawEtcd(b, int(txns), concurrency)
		slices.Sort(lat)
		b.ReportMetric(float64(took.Milliseconds()), "ms/1000nodes")
		b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
		b.ReportMetric(float64(txns), "etcd-txns")
		b.ReportMetric(float64(raw.Milliseconds()), "raw-etcd-ms")
		b.ReportMetric(float64(took)/float64(raw), "ratio-to-raw")
		b.Logf("%d nodes Ready in %v (p50 %v, p99 %v); %d etcd write txns; the same txns on raw etcd: %v; ratio %.2f",
			nodesPerRun, took.Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond),
			lat[len(lat)*99/100].Round(time.Millisecond), txns, raw.Round(time.Millisecond), float64(took)/float64(raw))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type system struct {
	api  sanbootv1.SanbootClient
	etcd *clientv3.Client
}

// startSystem builds the binaries and starts a control plane and an agent.
func startSystem(b *testing.B) *system {
	b.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./controlplane/cmd/sanboot-controlplane", "./agent/cmd/sanboot-agent")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("build: %v", err)
	}
	clientURL := "http://" + etcdtest.FreeAddr(b)
	peerURL := "http://" + etcdtest.FreeAddr(b)
	apiAddr := etcdtest.FreeAddr(b)
	start(b, dir, filepath.Join(bin, "sanboot-controlplane"), "--data-dir", filepath.Join(dir, "cp"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--api-listen", apiAddr)
	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	s := &system{api: sanbootv1.NewSanbootClient(conn)}
	s.etcd, err = clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.etcd.Close() })
	waitFor(b, "control plane API", func(ctx context.Context) bool {
		_, err := s.api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
		return err == nil
	})
	start(b, dir, filepath.Join(bin, "sanboot-agent"), "--name", "bench", "--etcd-endpoints", clientURL,
		"--driver", "fake", "--store-dir", filepath.Join(dir, "store"), "--workers", "16")
	waitFor(b, "agent Ready", func(ctx context.Context) bool {
		a, err := s.api.GetAgent(ctx, &sanbootv1.GetAgentRequest{Name: "bench"})
		return err == nil && a.State == "Ready"
	})
	return s
}

// start runs a program until the benchmark ends; its output goes to a log
// file in dir, printed if the benchmark fails.
func start(b *testing.B, dir, prog string, args ...string) {
	b.Helper()
	logPath := filepath.Join(dir, filepath.Base(prog)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", prog, err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		f.Close()
		if b.Failed() {
			out, _ := os.ReadFile(logPath)
			b.Logf("%s log:\n%s", filepath.Base(prog), out)
		}
	})
}

func waitFor(b *testing.B, what string, ok func(context.Context) bool) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		done := ok(ctx)
		cancel()
		if done {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("timed out waiting for %s", what)
}

func (s *system) createImage(b *testing.B, project string) {
	b.Helper()
	ctx := context.Background()
	_, err := s.api.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: project, Name: "golden"},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 1 << 30},
	}})
	if err != nil {
		b.Fatalf("create image: %v", err)
	}
	waitFor(b, "image replica Ready", func(ctx context.Context) bool {
		im, err := s.api.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: "golden"})
		return err == nil && im.Status.GetPhase() == "Ready"
	})
}

func (s *system) revision(b *testing.B) int64 {
	resp, err := s.etcd.Get(context.Background(), "/sanboot/v1/bench-revision-probe")
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// provision creates n nodes from `concurrency` goroutines and waits, through
// one watch, for all of them to be Ready. It returns the wall time and each
// node's latency from its PutNode call to the event that showed it Ready.
func (s *system) provision(b *testing.B, project string, n int) (time.Duration, []time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stream, err := s.api.WatchNodes(ctx, &sanbootv1.WatchNodesRequest{Project: project})
	if err != nil {
		b.Fatalf("watch: %v", err)
	}
	for { // wait for the watch to be in place
		ev, err := stream.Recv()
		if err != nil {
			b.Fatalf("watch: %v", err)
		}
		if ev.Type == sanbootv1.NodeEvent_TYPE_SYNCED {
			break
		}
	}
	sent := make([]atomic.Int64, n)
	readyAt := make([]time.Time, n)
	watchDone := make(chan error, 1)
	go func() {
		left := n
		for left > 0 {
			ev, err := stream.Recv()
			if err != nil {
				watchDone <- err
				return
			}
			nd := ev.Node
			st := nd.GetStatus()
			if st.GetPhase() != "Ready" || st.GetObservedGeneration() != nd.GetMetadata().GetGeneration() {
				continue
			}
			i, err := strconv.Atoi(nd.GetMetadata().GetName()[len("n-"):])
			if err != nil || i >= n || !readyAt[i].IsZero() {
				continue
			}
			readyAt[i] = time.Now()
			left--
		}
		watchDone <- nil
	}()

	begin := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				sent[i].Store(time.Now().UnixNano())
				_, err := s.api.PutNode(ctx, &sanbootv1.PutNodeRequest{Mode: sanbootv1.PutMode_PUT_MODE_CREATE, Node: &sanbootv1.Node{
					Metadata: &sanbootv1.ObjectMeta{Project: project, Name: fmt.Sprintf("n-%d", i)},
					Spec:     &sanbootv1.NodeSpec{Image: "golden"},
				}})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("PutNode: %v", err)
	}
	if err := <-watchDone; err != nil && err != io.EOF {
		b.Fatalf("watch: %v", err)
	}
	took := time.Since(begin)
	lat := make([]time.Duration, n)
	for i := range n {
		lat[i] = readyAt[i].Sub(time.Unix(0, sent[i].Load()))
	}
	return took, lat
}

// rawEtcd commits txns compare-and-put transactions from `workers`
// goroutines on a fresh embedded etcd and returns how long they took.
func rawEtcd(b *testing.B, txns, workers int) time.Duration {
	b.Helper()
	m := etcdtest.Start(b)
	c := m.Client(b)
	ctx := context.Background()
	val := string(make([]byte, 200)) // about the size of a node record
	var next atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(txns) {
					return
				}
				key := "/raw/" + strconv.FormatInt(i, 10)
				if _, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
					Then(clientv3.OpPut(key, val)).Commit(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(begin)
	m.Stop()
	return took
}
