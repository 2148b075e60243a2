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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
)

// concurrency is how many goroutines create nodes at once.
const concurrency = 64

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// system is a running control plane and one agent named "bench".
type system struct {
	api     sanbootv1.SanbootClient
	etcd    *clientv3.Client
	dir     string // logs, binaries, data
	apiAddr string
	bin     string // sanboot-controlplane, sanboot-agent, sanbootctl
	// controlPlane and agent are the processes' ids.
	controlPlane, agent int
}

// startSystem builds the binaries and starts a control plane and one agent
// named "bench" with agentArgs (its driver, store and target flags). Both
// stop when the benchmark ends.
func startSystem(b *testing.B, agentArgs ...string) *system {
	b.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./controlplane/cmd/sanboot-controlplane", "./agent/cmd/sanboot-agent", "./ctl/cmd/sanbootctl")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("build: %v", err)
	}
	clientURL := "http://" + etcdtest.FreeAddr(b)
	peerURL := "http://" + etcdtest.FreeAddr(b)
	apiAddr := etcdtest.FreeAddr(b)
	cp := start(b, dir, filepath.Join(bin, "sanboot-controlplane"), "--data-dir", filepath.Join(dir, "cp"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--api-listen", apiAddr,
		"--boot-listen", etcdtest.FreeAddr(b), "--metrics-listen", etcdtest.FreeAddr(b))
	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	s := &system{api: sanbootv1.NewSanbootClient(conn), dir: dir, apiAddr: apiAddr, bin: bin, controlPlane: cp}
	s.etcd, err = clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.etcd.Close() })
	eventually.True(b, "control plane API", try(func(ctx context.Context) bool {
		_, err := s.api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
		return err == nil
	}), eventually.Within(2*time.Minute))
	s.agent = start(b, dir, filepath.Join(bin, "sanboot-agent"), append([]string{"--name", "bench", "--etcd-endpoints", clientURL,
		"--metrics-listen", etcdtest.FreeAddr(b)}, agentArgs...)...)
	eventually.True(b, "agent Ready", try(func(ctx context.Context) bool {
		a, err := s.api.GetAgent(ctx, &sanbootv1.GetAgentRequest{Name: "bench"})
		return err == nil && a.State == "Ready"
	}), eventually.Within(2*time.Minute))
	return s
}

// try gives each call of ok five seconds.
func try(ok func(context.Context) bool) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return ok(ctx)
	}
}

// start runs a program until the benchmark ends; its output goes to a log
// file in dir, printed if the benchmark fails. At the end it gets SIGINT,
// and SIGKILL a minute later (an agent with a tgtd deletes every target
// first). It returns the process id.
func start(b *testing.B, dir, prog string, args ...string) int {
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
		case <-time.After(time.Minute):
			b.Errorf("%s did not stop within a minute of SIGINT: killed", filepath.Base(prog))
			cmd.Process.Kill()
			<-done
		}
		f.Close()
		if b.Failed() {
			out, _ := os.ReadFile(logPath)
			b.Logf("%s log:\n%s", filepath.Base(prog), out)
		}
	})
	return cmd.Process.Pid
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
	eventually.True(b, "image "+name+" Ready", try(func(ctx context.Context) bool {
		im, err := s.api.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		for _, r := range im.GetStatus().GetReplicas() {
			if msg := r.GetPhase() + ": " + r.GetMessage(); r.GetPhase() == "Failed" && msg != said {
				b.Logf("image %s on agent %s: %s", name, r.GetAgent(), msg)
				said = msg
			}
		}
		return err == nil && im.Status.GetPhase() == "Ready"
	}), eventually.Within(2*time.Minute))
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
