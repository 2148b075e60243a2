package export_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/agent/export"
	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/kv"
)

// fileImages is a FAKE store that holds one image, as a plain file.
type fileImages struct {
	name string
	path string
}

func (f fileImages) OpenImage(_ context.Context, project, name string) (*os.File, store.Image, error) {
	if name != f.name {
		return nil, store.Image{}, store.ErrNotFound
	}
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, store.Image{}, err
	}
	fi, _ := fh.Stat()
	return fh, store.Image{Project: project, Name: name, SizeBytes: fi.Size()}, nil
}

type env struct {
	ctx context.Context
	cli *clientv3.Client
	api sanbootv1.SanbootClient
}

// start runs etcd, a real API server (member cp1) and an exporter for
// agent a1 over images; a1 is registered and has Ready replicas of "img"
// and "gone".
func start(t *testing.T, images export.Images) *env {
	t.Helper()
	m := etcdtest.Start(t)
	e := &env{cli: m.Client(t)}
	log := cptest.Log(t)
	srv := apiserver.New(e.cli, apiserver.Config{Log: log, Member: "cp1", ExportStartTimeout: 30 * time.Second})
	gs := grpc.NewServer()
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.ctx = ctx
	exp, err := export.New(export.Config{Agent: "a1", Client: e.cli, Images: images, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { gs.Serve(lis) })
	wg.Go(func() {
		apiserver.RegisterMember(ctx, e.cli, &sanbootv1.Member{Name: "cp1", ApiEndpoints: []string{lis.Addr().String()}}, 10, log)
	})
	wg.Go(func() { exp.Run(ctx) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.api = sanbootv1.NewSanbootClient(conn)
	t.Cleanup(func() { conn.Close(); cancel(); gs.Stop(); wg.Wait() })

	reg, err := registry.New(e.cli, registry.Config{Name: "a1", Driver: "fake", TTL: 10 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { reg.Run(ctx) })
	<-reg.Ready()
	for _, name := range []string{"img", "gone"} {
		if _, err := e.api.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}}); err != nil {
			t.Fatal(err)
		}
		put, err := kv.PutOp(api.ReplicaKey(api.DefaultProject, name, "a1"), &sanbootv1.ImageReplica{Agent: "a1", Phase: api.ReplicaReady})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Do(ctx, put); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) export(ctx context.Context, name string) ([]byte, error) {
	st, err := e.api.ExportImage(ctx, &sanbootv1.GetRequest{Name: name})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, c.Data...)
	}
}

func TestExporterPushesTheImage(t *testing.T) {
	b := make([]byte, 2<<20+512)
	for i := range b {
		b[i] = byte(i * 3)
	}
	path := t.TempDir() + "/img.raw"
	os.WriteFile(path, b, 0o600)
	e := start(t, fileImages{name: "img", path: path})

	got, err := e.export(e.ctx, "img")
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("export: %d bytes, %v; want the image's %d", len(got), err, len(b))
	}
	// A replica the store does not hold: the client hears why at once.
	_, err = e.export(e.ctx, "gone")
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "does not hold it") {
		t.Fatalf("export of an image the store lacks: %v", err)
	}
	// Twice: each request is answered once, each export gets its push.
	if got, err := e.export(e.ctx, "img"); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("second export: %d bytes, %v", len(got), err)
	}
}

func TestExporterOfAStoreWithoutBytesSaysSo(t *testing.T) {
	e := start(t, nil)
	_, err := e.export(e.ctx, "img")
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "keeps no bytes") {
		t.Fatalf("export from the fake store: %v", err)
	}
}
