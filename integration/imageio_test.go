package integration_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/agent"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/staging"
	"github.com/sanboot/sanboot/ctl/cli"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/eventually"
)

const wait = 60 * time.Second // generous: a loaded 2-core machine

type system struct {
	t         *testing.T
	ctx       context.Context
	cli       *clientv3.Client
	api       sanbootv1.SanbootClient
	addr      string
	uploadDir string
	store     string // the agent's store directory
	// ctlTimeout bounds each sanbootctl run (default 2*wait).
	ctlTimeout time.Duration
}

// start runs etcd, the API server of member cp1 (collecting staged
// uploads every 200 ms) and the scheduler (cptest.StartAPI), and agent a1
// with a file store.
func start(t *testing.T) *system {
	t.Helper()
	return startWith(t, false)
}

// startWith is start; with fakeStore, agent a1 keeps its images and disks
// in the FAKE in-memory store (as sanboot-agent --driver=fake), for fleets
// larger than a temp directory holds.
func startWith(t *testing.T, fakeStore bool) *system {
	t.Helper()
	s := &system{t: t, uploadDir: filepath.Join(t.TempDir(), "uploads")}
	log := cptest.Log(t)

	// The control plane's API and scheduler.
	area, err := staging.Open(s.uploadDir, staging.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	a := cptest.StartAPI(t, cptest.Options{
		Config:    apiserver.Config{Log: log, Member: "cp1", Uploads: area, UploadGCInterval: 200 * time.Millisecond},
		Scheduler: true, Register: true,
	})
	s.cli, s.api, s.addr = a.Client, a.API, a.Addr
	ctx, cancel := context.WithCancel(a.Ctx)
	s.ctx = ctx
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	// The agent, run as sanboot-agent runs it.
	s.store = t.TempDir()
	storeKind := agent.StoreFile
	if fakeStore {
		storeKind = agent.StoreFake
	}
	wg.Go(func() {
		if err := agent.Run(ctx, testAgent("a1", a.Etcd.Endpoints, storeKind, s.store, log)); err != nil {
			t.Errorf("agent a1: %v", err)
		}
	})
	return s
}

// testAgent is the configuration of an agent with the fake driver (which
// serves no iSCSI) and a store of kind in dir; it retries failed work
// within a second.
func testAgent(name string, endpoints []string, kind, dir string, log *slog.Logger) agent.Config {
	return agent.Config{Name: name, Endpoints: endpoints, Driver: "fake", Store: kind, StoreDir: dir, FakeCapacity: 1 << 40,
		Portals: []string{"127.0.0.1:3260"}, LeaseTTL: 10 * time.Second, ResyncInterval: time.Minute, Workers: 8,
		RetryBase: 100 * time.Millisecond, RetryMax: time.Second, Log: log}
}

// ctl runs sanbootctl against the system and fails the test unless it
// exits 0; it returns stdout.
func (s *system) ctl(args ...string) string {
	s.t.Helper()
	code, out, errOut := s.run(args...)
	if code != 0 {
		s.t.Fatalf("sanbootctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// run runs sanbootctl and returns its exit code, stdout and stderr.
func (s *system) run(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	env := map[string]string{"SANBOOT_ENDPOINTS": s.addr, "HOME": s.t.TempDir()}
	ctx, cancel := context.WithTimeout(s.ctx, cmp.Or(s.ctlTimeout, 2*wait))
	defer cancel()
	code := cli.Run(ctx, cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, args)
	return code, out.String(), errOut.String()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// disk is n bytes with data, a hole of zeros, and data.
func disk(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if i < n/3 || i > 2*n/3 {
			b[i] = byte(i*11 + i/4093)
		}
	}
	return b
}

// replica returns the agent's replica of image once the image is Ready.
func (s *system) readyReplica(name string) *sanbootv1.ImageReplica {
	s.t.Helper()
	var im *sanbootv1.Image
	var err error
	eventually.True(s.t, "image "+name+" Ready", func() bool {
		im, err = s.api.GetImage(s.ctx, &sanbootv1.GetRequest{Name: name})
		return err == nil && im.Status.GetPhase() == api.ReplicaReady && len(im.Status.Replicas) == 1
	}, eventually.Seen(func() string { return fmt.Sprint(im.GetStatus(), err) }))
	return im.Status.Replicas[0]
}

func (s *system) staged() []string {
	ents, err := os.ReadDir(s.uploadDir)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// Bytes imported with sanbootctl reach the agent's store through the
// control plane (the agent fetching them), the replica is Ready with the
// bytes' sha256, the staged upload is collected, and an export gives the
// same bytes back, verified.
func TestImportThenExportGivesTheSameBytes(t *testing.T) {
	s := start(t)
	dir := t.TempDir()
	b := disk(6<<20 + 512)
	in := filepath.Join(dir, "in.raw")
	if err := os.WriteFile(in, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := s.ctl("image", "import", "golden", in, "--wait")
	if !strings.Contains(out, sum(b)) {
		t.Fatalf("import said %q, want the sha256 %s", out, sum(b))
	}
	rep := s.readyReplica("golden")
	if rep.Agent != "a1" || rep.Sha256 != sum(b) || rep.SizeBytes != int64(len(b)) {
		t.Fatalf("replica %v, want a1 Ready with sha256 %s and %d bytes", rep, sum(b), len(b))
	}
	eventually.True(t, "the staged upload collected once the replica is Ready", func() bool { return len(s.staged()) == 0 },
		eventually.Seen(func() string { return fmt.Sprintf("%q", s.staged()) }))
	wide := s.ctl("get", "images", "-o", "wide")
	if !strings.Contains(wide, sum(b)[:12]) || !strings.Contains(wide, "a1=Ready") {
		t.Fatalf("get images -o wide shows no checksum or replica phase:\n%s", wide)
	}

	exported := filepath.Join(dir, "out.raw")
	msg := s.ctl("image", "export", "golden", exported)
	got, err := os.ReadFile(exported)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("export wrote %d bytes (%v), want the %d imported", len(got), err, len(b))
	}
	if !strings.Contains(msg, "verified") {
		t.Fatalf("export said %q", msg)
	}
}

// A qcow2 file is converted on the control plane; the agent holds the raw
// image; a URL source is fetched by the agent itself.
func TestQcow2AndURLImports(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal("qemu-img not found: install qemu-utils (apt-get install qemu-utils; hack/install-deps.sh does it)")
	}
	s := start(t)
	dir := t.TempDir()
	raw := disk(3 << 20)
	os.WriteFile(filepath.Join(dir, "in.raw"), raw, 0o600)
	q := filepath.Join(dir, "in.qcow2")
	if out, err := exec.Command(qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "in.raw"), q).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	s.ctl("image", "import", "from-qcow2", q, "--wait")
	if rep := s.readyReplica("from-qcow2"); rep.Sha256 != sum(raw) || rep.SizeBytes != int64(len(raw)) {
		t.Fatalf("replica %v, want the raw image's sha256 %s", rep, sum(raw))
	}

	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "img.raw", time.Time{}, bytes.NewReader(raw))
	}))
	defer hs.Close()
	s.ctl("image", "import", "from-url", "--from-url", hs.URL+"/img.raw", "--sha256", sum(raw), "--wait")
	if rep := s.readyReplica("from-url"); rep.Sha256 != sum(raw) {
		t.Fatalf("replica %v, want sha256 %s", rep, sum(raw))
	}
	exported := filepath.Join(dir, "out.raw")
	s.ctl("image", "export", "from-url", exported)
	if got, _ := os.ReadFile(exported); !bytes.Equal(got, raw) {
		t.Fatal("the export of the URL image differs from what the URL served")
	}
}

// An image larger than the agent's free space: the replica is Failed with
// the store's message, and import --wait says so.
func TestImageLargerThanTheStoreIsAClearError(t *testing.T) {
	s := start(t)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the agent fetched an image it has no room for")
	}))
	defer hs.Close()
	code, _, stderr := s.run("image", "import", "huge", "--from-url", hs.URL+"/huge.raw", "--size", "60TiB", "--wait")
	if code != 1 || !strings.Contains(stderr, "agent a1") || !strings.Contains(stderr, "free") {
		t.Fatalf("exit %d, stderr %q; want exit 1 with the agent's message about free space", code, stderr)
	}
}
