package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/dial"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/proctest"
)

// concurrency is how many goroutines create nodes at once.
const concurrency = 64

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// system is a running control plane (one member or several) and one
// agent named "bench".
type system struct {
	api     sanbootv1.SanbootClient // over every member's API
	etcd    *clientv3.Client        // over every member's client URL
	dir     string                  // logs, binaries, data
	members []*member
	bin     string // sanboot-controlplane, sanboot-agent, sanbootctl
	// controlPlane and agent are the processes' ids (controlPlane: the
	// first member's).
	controlPlane, agent int
	agentProc           *proctest.Proc
	agentMetrics        string // the agent's --metrics-listen
}

// member is one sanboot-controlplane process and where it listens.
type member struct {
	name, client, peer, api string
	metrics                 string   // --metrics-listen (and /debug/pprof/)
	args                    []string // to start it again on its data
	proc                    *proctest.Proc
}

// apiAddrs are the members' API addresses, in order.
func (s *system) apiAddrs() []string {
	var out []string
	for _, m := range s.members {
		out = append(out, m.api)
	}
	return out
}

// startSystem builds the binaries and starts a control plane of one member
// and one agent named "bench" with agentArgs (its driver, store and target
// flags). Both stop when the benchmark ends.
func startSystem(b *testing.B, agentArgs ...string) *system {
	return startCluster(b, 1, agentArgs...)
}

// buildBinaries builds the three programs into dir/bin.
func buildBinaries(b *testing.B, dir string) string {
	b.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./controlplane/cmd/sanboot-controlplane", "./agent/cmd/sanboot-agent", "./ctl/cmd/sanbootctl")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("build: %v", err)
	}
	return bin
}

// startCluster is startSystem with n control-plane members (m1 ... mn,
// each on its own loopback ports, with etcd's and sanboot's default
// election settings); the agent and the API client know every member.
func startCluster(b *testing.B, n int, agentArgs ...string) *system {
	b.Helper()
	dir := b.TempDir()
	bin := buildBinaries(b, dir)
	s := &system{dir: dir, bin: bin}
	var initial, clientURLs []string
	addrs := etcdtest.FreeAddrs(b, 5*n)
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i+1), client: addrs[5*i], peer: addrs[5*i+1], api: addrs[5*i+2], metrics: addrs[5*i+4]}
		if n == 1 {
			m.name = "default"
		}
		s.members = append(s.members, m)
		initial = append(initial, m.name+"=http://"+m.peer)
		clientURLs = append(clientURLs, "http://"+m.client)
	}
	for i, m := range s.members {
		m.args = []string{"--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", "http://" + m.client, "--advertise-client-urls", "http://" + m.client,
			"--listen-peer-urls", "http://" + m.peer, "--initial-advertise-peer-urls", "http://" + m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--api-listen", m.api,
			"--boot-listen", addrs[5*i+3], "--metrics-listen", m.metrics, "--enable-pprof"}
		s.startMember(b, m)
	}
	s.controlPlane = s.members[0].proc.PID()
	conn, err := dial.Dial(dial.Options{Endpoints: s.apiAddrs()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	s.api = sanbootv1.NewSanbootClient(conn)
	s.etcd, err = clientv3.New(clientv3.Config{Endpoints: clientURLs, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.etcd.Close() })
	waitFor(b, "control plane API", func(ctx context.Context) bool {
		resp, err := s.api.ListMembers(ctx, &sanbootv1.ListMembersRequest{})
		return err == nil && len(resp.Members) == n
	})
	s.agentMetrics = etcdtest.FreeAddr(b)
	s.agentProc = startProc(b, dir, "sanboot-agent", filepath.Join(bin, "sanboot-agent"), append([]string{"--name", "bench", "--etcd-endpoints", strings.Join(clientURLs, ","),
		"--metrics-listen", s.agentMetrics}, agentArgs...)...)
	s.agent = s.agentProc.PID()
	waitFor(b, "agent Ready", func(ctx context.Context) bool {
		a, err := s.api.GetAgent(ctx, &sanbootv1.GetAgentRequest{Name: "bench"})
		return err == nil && a.State == "Ready"
	})
	return s
}

// waitFor waits (up to two minutes) until ok, giving each call five
// seconds.
func waitFor(b *testing.B, what string, ok func(context.Context) bool) {
	b.Helper()
	eventually.True(b, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return ok(ctx)
	}, eventually.Within(2*time.Minute))
}

// startMember starts (or starts again, on its data) member m.
func (s *system) startMember(b *testing.B, m *member) {
	b.Helper()
	m.proc = startProc(b, s.dir, "sanboot-controlplane-"+m.name, filepath.Join(s.bin, "sanboot-controlplane"), m.args...)
}

// stop stops the agent and every member (SIGINT), before the benchmark
// ends: to run another system in the same benchmark.
func (s *system) stop(b *testing.B) {
	b.Helper()
	s.agentProc.Stop()
	for _, m := range s.members {
		m.proc.Stop()
	}
}

// start runs a program until the benchmark ends (startProc) and returns
// its process id.
func start(b *testing.B, dir, prog string, args ...string) int {
	b.Helper()
	return startProc(b, dir, filepath.Base(prog), prog, args...).PID()
}

// startProc runs a program until the benchmark ends; its output goes to
// dir/name.log (appended to: a member started again keeps one log),
// printed if the benchmark fails. At the end it gets SIGINT, and SIGKILL a
// minute later (an agent with a tgtd deletes every target first).
func startProc(b *testing.B, dir, name, prog string, args ...string) *proctest.Proc {
	b.Helper()
	return proctest.Start(b, proctest.Options{Dir: dir, Name: name, Path: prog, Args: args,
		TailLines: 200, KeepLogIn: os.Getenv("SANBOOT_BENCH_LOGS")})
}

// createImage creates a blank (sparse, zero) 1 GiB image named golden and
// waits until the agent holds it.
func (s *system) createImage(b *testing.B, project string) {
	b.Helper()
	s.putImage(b, project, "golden", &sanbootv1.ImageSpec{SizeBytes: 1 << 30})
}

// uploadImage uploads an image of size bytes, zero but for data bytes of
// pseudo-random data spread over it in 1 MiB runs, the way sanbootctl
// image import does (UploadImage, then PutImage with the upload as its
// source), and waits until the agent holds it.
func (s *system) uploadImage(b *testing.B, project, name string, size, data int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stream, err := s.api.UploadImage(ctx)
	if err != nil {
		b.Fatalf("upload: %v", err)
	}
	if err := stream.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Header{
		Header: &sanbootv1.UploadHeader{Project: project, SizeBytes: size}}}); err != nil {
		b.Fatalf("upload header: %v", err)
	}
	const chunk = 1 << 20
	runs := data / chunk
	every := size / max(runs, 1) / chunk * chunk // a data run starts every `every` bytes
	rng := rand.NewChaCha8([32]byte{byte(len(name))})
	h := sha256.New()
	buf := make([]byte, chunk)
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if runs > 0 && off%every == 0 && off/every < runs {
			rng.Read(buf[:n])
		} else {
			clear(buf[:n])
		}
		h.Write(buf[:n])
		if err := stream.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Chunk{Chunk: buf[:n]}}); err != nil {
			_, err = stream.CloseAndRecv()
			b.Fatalf("upload at byte %d: %v", off, err)
		}
	}
	up, err := stream.CloseAndRecv()
	if err != nil {
		b.Fatalf("upload: %v", err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); up.GetSha256() != sum {
		b.Fatalf("the control plane staged sha256 %s, the benchmark sent %s", up.GetSha256(), sum)
	}
	s.putImage(b, project, name, &sanbootv1.ImageSpec{SizeBytes: up.GetSizeBytes(), Source: &sanbootv1.ImageSource{
		Kind: &sanbootv1.ImageSource_Upload{Upload: &sanbootv1.UploadSource{
			UploadId: up.GetUploadId(), Sha256: up.GetSha256(), Member: up.GetMember()}}}})
}

func (s *system) putImage(b *testing.B, project, name string, spec *sanbootv1.ImageSpec) {
	b.Helper()
	_, err := s.api.PutImage(context.Background(), &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name},
		Spec:     spec,
	}})
	if err != nil {
		b.Fatalf("create image %s: %v", name, err)
	}
	var said string
	waitFor(b, "image "+name+" Ready", func(ctx context.Context) bool {
		im, err := s.api.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		for _, r := range im.GetStatus().GetReplicas() {
			if msg := r.GetPhase() + ": " + r.GetMessage(); r.GetPhase() == "Failed" && msg != said {
				b.Logf("image %s on agent %s: %s", name, r.GetAgent(), msg)
				said = msg
			}
		}
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

// provision creates n nodes <prefix>0 ... <prefix><n-1> from image, from
// `concurrency` goroutines, and waits, through one watch, for all of them to be Ready. It
// returns the wall time and each node's latency from its PutNode call to
// the event that showed it Ready. A node that fails ends the benchmark.
func (s *system) provision(b *testing.B, project, image, prefix string, n int) (time.Duration, []time.Duration) {
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
			if st.GetPhase() == "Failed" {
				watchDone <- fmt.Errorf("node %s failed: %s", nd.GetMetadata().GetName(), st.GetMessage())
				return
			}
			if st.GetPhase() != "Ready" || st.GetObservedGeneration() != nd.GetMetadata().GetGeneration() {
				continue
			}
			num, ok := strings.CutPrefix(nd.GetMetadata().GetName(), prefix)
			if !ok {
				continue
			}
			i, err := strconv.Atoi(num)
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
					Metadata: &sanbootv1.ObjectMeta{Project: project, Name: prefix + strconv.Itoa(i)},
					Spec:     &sanbootv1.NodeSpec{Image: image},
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
