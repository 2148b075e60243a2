package integration_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/agent/store/filestore"
	faketarget "github.com/sanboot/sanboot/agent/target/fake"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/scheduler"
	"github.com/sanboot/sanboot/internal/etcdtest"
)

const (
	agentName = "agent-1"
	wait      = 60 * time.Second // generous: a loaded 2-core machine
	imageSize = 4 << 20
)

// cluster is one control plane and one agent in this process.
type cluster struct {
	t     *testing.T
	ctx   context.Context
	api   sanbootv1.SanbootClient
	store string // the agent's store directory
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	m := etcdtest.Start(t)
	cli := m.Client(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup

	srv := apiserver.New(cli, apiserver.Config{Log: log})
	gs := grpc.NewServer(apiserver.ServerOptions(log)...)
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { srv.Run(ctx) })
	wg.Go(func() { gs.Serve(lis) })
	wg.Go(func() { scheduler.New(cli, scheduler.Config{Log: log}).Run(ctx) })

	root := t.TempDir()
	st, err := filestore.New(filestore.Options{Root: root, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	portals := []string{"127.0.0.1:3260"}
	reg, err := registry.New(cli, registry.Config{Name: agentName, Version: "test", Driver: "fake", Portals: portals,
		CloneMode: string(st.CloneMode()), TTL: 10 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reconciler.New(reconciler.Config{Agent: agentName, Client: cli, Store: st, Driver: faketarget.New(),
		Portals: portals, RetryBase: 50 * time.Millisecond, RetryMax: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { reg.Run(ctx) })
	wg.Go(func() { rec.Run(ctx) })

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		gs.Stop()
		wg.Wait()
		st.Close()
	})
	return &cluster{t: t, ctx: ctx, api: sanbootv1.NewSanbootClient(conn), store: root}
}

func (c *cluster) putImage(im *sanbootv1.Image) *sanbootv1.Image {
	c.t.Helper()
	resp, err := c.api.PutImage(c.ctx, &sanbootv1.PutImageRequest{Image: im, Mode: sanbootv1.PutMode_PUT_MODE_CREATE})
	if err != nil {
		c.t.Fatalf("PutImage %s: %v", im.GetMetadata().GetName(), err)
	}
	return resp.GetImage()
}

func (c *cluster) provision(name, image string) {
	c.t.Helper()
	n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.NodeSpec{Image: image}}
	if _, err := c.api.PutNode(c.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
		c.t.Fatalf("PutNode %s: %v", name, err)
	}
	c.waitNode(name, "Ready", func(n *sanbootv1.Node, err error) bool {
		return err == nil && n.GetStatus().GetPhase() == api.PhaseReady
	})
}

func (c *cluster) waitNode(name, what string, ok func(*sanbootv1.Node, error) bool) {
	c.t.Helper()
	var n *sanbootv1.Node
	var err error
	eventually(c.t, "node "+name+" "+what, func() bool {
		n, err = c.api.GetNode(c.ctx, &sanbootv1.GetRequest{Name: name})
		return ok(n, err)
	}, func() string { return n.GetStatus().String() + " " + errString(err) })
}

func (c *cluster) waitImageReady(name string) *sanbootv1.Image {
	c.t.Helper()
	var im *sanbootv1.Image
	var err error
	eventually(c.t, "image "+name+" Ready", func() bool {
		im, err = c.api.GetImage(c.ctx, &sanbootv1.GetRequest{Name: name})
		return err == nil && im.GetStatus().GetPhase() == api.ReplicaReady
	}, func() string { return im.GetStatus().String() + " " + errString(err) })
	return im
}

func (c *cluster) diskPath(node string) string {
	return filepath.Join(c.store, "disks", api.DefaultProject, node+".raw")
}

func (c *cluster) imagePath(image string) string {
	return filepath.Join(c.store, "images", api.DefaultProject, image+".raw")
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// A node's disk, snapshotted, provisions a second node with the same
// bytes; deleting the first node leaves the snapshot and the second node
// intact.
func TestSnapshotProvisionsAndOutlivesItsNode(t *testing.T) {
	c := startCluster(t)
	c.putImage(&sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "golden"}, Spec: &sanbootv1.ImageSpec{SizeBytes: imageSize}})
	c.waitImageReady("golden")
	c.provision("n1", "golden")

	// What the machine wrote through its target: bytes in its disk file,
	// not fsynced (the snapshot does that).
	payload := []byte("written by n1 before the snapshot\x00\x01\x02\xff")
	const off = 1<<20 + 17
	f, err := os.OpenFile(c.diskPath("n1"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	snap := c.putImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "s1"},
		Spec:     &sanbootv1.ImageSpec{Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: "n1"}}}},
	})
	if s := snap.GetSpec(); s.GetSizeBytes() != imageSize || s.GetParent() != "golden" || len(s.GetAgents()) != 1 || s.GetAgents()[0] != agentName {
		t.Fatalf("snapshot spec = %v", s)
	}
	c.waitImageReady("s1")
	c.provision("n2", "s1")
	if got := readAt(t, c.diskPath("n2"), off, len(payload)); !bytes.Equal(got, payload) {
		t.Fatalf("n2's disk holds %q at %d, want %q", got, off, payload)
	}

	// Writes after the snapshot stay on n1's disk.
	f, err = os.OpenFile(c.diskPath("n1"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("later"), off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The parent cannot go while the snapshot exists; the snapshot cannot
	// go while n2 uses it.
	_, err = c.api.DeleteImage(c.ctx, &sanbootv1.DeleteRequest{Name: "golden"})
	wantCode(t, err, codes.FailedPrecondition, "used by nodes n1 and by snapshots s1")
	_, err = c.api.DeleteImage(c.ctx, &sanbootv1.DeleteRequest{Name: "s1"})
	wantCode(t, err, codes.FailedPrecondition, "used by nodes n2")

	if _, err := c.api.DeleteNode(c.ctx, &sanbootv1.DeleteRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	c.waitNode("n1", "gone", func(_ *sanbootv1.Node, err error) bool { return status.Code(err) == codes.NotFound })
	if _, err := os.Stat(c.diskPath("n1")); !os.IsNotExist(err) {
		t.Errorf("n1's disk after its deletion: %v", err)
	}

	im := c.waitImageReady("s1")
	if im.GetSpec().GetParent() != "golden" {
		t.Errorf("snapshot after its node's deletion = %v", im)
	}
	for _, path := range []string{c.imagePath("s1"), c.diskPath("n2")} {
		if got := readAt(t, path, off, len(payload)); !bytes.Equal(got, payload) {
			t.Errorf("%s holds %q at %d after n1's deletion, want %q", path, got, off, payload)
		}
	}
	n2, err := c.api.GetNode(c.ctx, &sanbootv1.GetRequest{Name: "n2"})
	if err != nil || n2.GetStatus().GetPhase() != api.PhaseReady {
		t.Errorf("n2 after n1's deletion = %v, %v", n2.GetStatus(), err)
	}
	_, err = c.api.DeleteImage(c.ctx, &sanbootv1.DeleteRequest{Name: "golden"})
	wantCode(t, err, codes.FailedPrecondition, "used by snapshots s1")
}

func eventually(t *testing.T, what string, cond func() bool, got func() string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last seen: %s", what, got())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Fatalf("error message %q lacks %q", st.Message(), p)
		}
	}
}
