package apiserver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
	"github.com/sanboot/sanboot/controlplane/staging"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

const member = "cp1"

// stageEnv is a real etcd and an API server that stages uploads in a temp
// directory and is registered as member cp1. Its watch cache and upload
// collector do not run: tests call the collector themselves.
type stageEnv struct {
	t   *testing.T
	ctx context.Context
	cli *clientv3.Client
	srv *apiserver.Server
	api sanbootv1.SanbootClient
	// data is the agents' service (ReadUpload, PushExport).
	data sanbootv1.AgentDataClient
	dir  string
}

func startStaging(t *testing.T, stagingOpts staging.Options) *stageEnv {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "uploads")
	area, err := staging.Open(dir, stagingOpts)
	if err != nil {
		t.Fatal(err)
	}
	a := cptest.StartAPI(t, cptest.Options{
		Config:  apiserver.Config{Member: member, Uploads: area, ExportStartTimeout: 30 * time.Second},
		NoLoops: true, Register: true,
	})
	return &stageEnv{t: t, ctx: a.Ctx, cli: a.Client, srv: a.Server, api: a.API, data: sanbootv1.NewAgentDataClient(a.Conn), dir: dir}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i/1000)
	}
	return b
}

// upload streams data in 64 KiB chunks after hdr.
func (e *stageEnv) upload(ctx context.Context, hdr *sanbootv1.UploadHeader, data []byte) (*sanbootv1.UploadImageResponse, error) {
	st, err := e.api.UploadImage(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Header{Header: hdr}}); err != nil {
		return st.CloseAndRecv()
	}
	for len(data) > 0 {
		n := min(len(data), 64<<10)
		if err := st.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Chunk{Chunk: data[:n]}}); err != nil {
			return st.CloseAndRecv()
		}
		data = data[n:]
	}
	return st.CloseAndRecv()
}

// recvData reads a stream of chunks (ReadUpload, ExportImage) to its end
// and returns their bytes: all of them, or those before the error.
func recvData[C any, P interface {
	*C
	GetData() []byte
}](st grpc.ServerStreamingClient[C]) ([]byte, error) {
	var out []byte
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, P(c).GetData()...)
	}
}

func (e *stageEnv) read(id string, off int64) ([]byte, error) {
	st, err := e.data.ReadUpload(e.ctx, &sanbootv1.ReadUploadRequest{UploadId: id, Offset: off})
	if err != nil {
		return nil, err
	}
	return recvData(st)
}

func (e *stageEnv) files() []string {
	e.t.Helper()
	ents, err := os.ReadDir(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, d := range ents {
		out = append(out, d.Name())
	}
	return out
}

func TestUploadIsStagedAndReadFromAnyOffset(t *testing.T) {
	e := startStaging(t, staging.Options{})
	data := pattern(3<<20 + 512)
	resp, err := e.upload(e.ctx, &sanbootv1.UploadHeader{SizeBytes: int64(len(data)), Sha256: sha(data)}, data)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Sha256 != sha(data) || resp.SizeBytes != int64(len(data)) || resp.Member != member || resp.Format != "raw" || !staging.ValidID(resp.UploadId) {
		t.Fatalf("response %v", resp)
	}
	if got := e.files(); !slices.Equal(got, []string{resp.UploadId}) {
		t.Fatalf("staging directory holds %q, want only the upload", got)
	}
	for _, off := range []int64{0, 1, 1 << 20, int64(len(data)) - 1, int64(len(data))} {
		got, err := e.read(resp.UploadId, off)
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("ReadUpload from %d: %d bytes, %v; want the %d bytes from there", off, len(got), err, len(data)-int(off))
		}
	}
	_, err = e.read(resp.UploadId, int64(len(data))+1)
	wantCode(t, err, codes.OutOfRange)
	_, err = e.read(strings.Repeat("0", 32), 0)
	wantCode(t, err, codes.NotFound, "import the image again")
	_, err = e.read("../../etc/passwd", 0)
	wantCode(t, err, codes.NotFound)
}

func TestUploadIsRefusedAndLeavesNothing(t *testing.T) {
	e := startStaging(t, staging.Options{QemuImg: "/nonexistent/qemu-img"})
	data := pattern(1 << 20)
	for _, tc := range []struct {
		name  string
		hdr   *sanbootv1.UploadHeader
		data  []byte
		code  codes.Code
		parts []string
	}{
		{"wrong checksum", &sanbootv1.UploadHeader{Sha256: sha([]byte("x"))}, data, codes.InvalidArgument, []string{"sha256"}},
		{"shorter than announced", &sanbootv1.UploadHeader{SizeBytes: int64(len(data)) + 512}, data, codes.InvalidArgument, []string{"announced"}},
		{"longer than announced", &sanbootv1.UploadHeader{SizeBytes: 512}, data, codes.InvalidArgument, []string{"more than"}},
		{"not whole sectors", &sanbootv1.UploadHeader{}, data[:700], codes.InvalidArgument, []string{"512-byte sectors"}},
		{"bad project", &sanbootv1.UploadHeader{Project: "No"}, data, codes.InvalidArgument, []string{"header.project"}},
		{"more than the disk", &sanbootv1.UploadHeader{SizeBytes: 60 << 40}, data, codes.ResourceExhausted, []string{"free"}},
		{"qcow2 without qemu-img", &sanbootv1.UploadHeader{}, append([]byte("QFI\xfb"), data[4:]...), codes.FailedPrecondition, []string{"qemu-utils"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.upload(e.ctx, tc.hdr, tc.data)
			wantCode(t, err, tc.code, tc.parts...)
			eventually.True(t, "the staging directory to be empty", func() bool { return len(e.files()) == 0 }, eventually.Seen(func() string { return strings.Join(e.files(), ",") }))
		})
	}
}

func TestInterruptedUploadLeavesNothing(t *testing.T) {
	e := startStaging(t, staging.Options{})
	ctx, cancel := context.WithCancel(e.ctx)
	st, err := e.api.UploadImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Header{Header: &sanbootv1.UploadHeader{SizeBytes: 8 << 20}}})
	st.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Chunk{Chunk: pattern(1 << 20)}})
	eventually.True(t, "the upload's temp file", func() bool {
		f := e.files()
		return len(f) == 1 && strings.HasPrefix(f[0], ".tmp-")
	}, eventually.Seen(func() string { return strings.Join(e.files(), ",") }))
	cancel() // the client goes away mid-upload
	eventually.True(t, "the staging directory to be empty", func() bool { return len(e.files()) == 0 }, eventually.Seen(func() string { return strings.Join(e.files(), ",") }))
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal("qemu-img not found: install qemu-utils (apt-get install qemu-utils; hack/install-deps.sh does it)")
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
}

func TestQcow2UploadIsStagedAsRaw(t *testing.T) {
	e := startStaging(t, staging.Options{})
	dir := t.TempDir()
	raw := pattern(2 << 20)
	os.WriteFile(filepath.Join(dir, "in.raw"), raw, 0o600)
	qemuImg(t, "convert", "-q", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "in.raw"), filepath.Join(dir, "in.qcow2"))
	q, err := os.ReadFile(filepath.Join(dir, "in.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.upload(e.ctx, &sanbootv1.UploadHeader{SizeBytes: int64(len(q)), Sha256: sha(q)}, q)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Format != "qcow2" || resp.SizeBytes != int64(len(raw)) || resp.Sha256 != sha(raw) {
		t.Fatalf("response %v; want format qcow2 with the raw image's size %d and sha256 %s", resp, len(raw), sha(raw))
	}
	if got, err := e.read(resp.UploadId, 0); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("ReadUpload: %d bytes, %v; want the raw image", len(got), err)
	}
}

// putImage writes an image that refers to an upload straight into etcd.
func (e *stageEnv) putImage(name, uploadID, sum string, agents ...string) {
	e.t.Helper()
	_, err := e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: name},
		Spec: &sanbootv1.ImageSpec{SizeBytes: 512, Agents: agents, Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Upload{
			Upload: &sanbootv1.UploadSource{UploadId: uploadID, Sha256: sum, Member: member}}}},
	}})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *stageEnv) replica(image, agent, phase, sum string) {
	e.t.Helper()
	put, err := kv.PutOp(api.ReplicaKey(api.DefaultProject, image, agent), &sanbootv1.ImageReplica{Agent: agent, Phase: phase, Sha256: sum})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.cli.Do(e.ctx, put); err != nil {
		e.t.Fatal(err)
	}
}

func TestStagedUploadsAreCollected(t *testing.T) {
	e := startStaging(t, staging.Options{})
	for _, a := range []string{"a", "b"} {
		if _, err := fakeagent.Register(e.ctx, e.cli, a, 10); err != nil {
			t.Fatal(err)
		}
	}
	stage := func() *sanbootv1.UploadImageResponse {
		t.Helper()
		r, err := e.upload(e.ctx, &sanbootv1.UploadHeader{}, pattern(512))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	done, pending, all, orphan, old := stage(), stage(), stage(), stage(), stage()
	e.putImage("done", done.UploadId, done.Sha256, "a")
	e.replica("done", "a", api.ReplicaReady, done.Sha256)
	e.putImage("pending", pending.UploadId, pending.Sha256, "a")
	e.replica("pending", "a", api.ReplicaPending, "")
	e.putImage("all", all.UploadId, all.Sha256) // every agent: a and b
	e.replica("all", "a", api.ReplicaReady, all.Sha256)
	staged := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(filepath.Join(e.dir, old.UploadId), staged, staged); err != nil {
		t.Fatal(err)
	}

	collect := func(now time.Time, want ...string) {
		t.Helper()
		got, err := apiserver.CollectUploads(e.ctx, e.srv, now)
		slices.Sort(got)
		slices.Sort(want)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("collected %q (%v), want %q", got, err, want)
		}
		for _, id := range want {
			if _, err := e.read(id, 0); err == nil {
				t.Fatalf("upload %s is still served after it was collected", id)
			}
		}
	}
	// Replicated everywhere wanted, and old with no image: collected.
	collect(time.Now(), done.UploadId, old.UploadId)
	// A wanted replica is still Pending, or an agent lacks one: kept.
	collect(time.Now())
	e.replica("pending", "a", api.ReplicaReady, "0000000000000000000000000000000000000000000000000000000000000000")
	collect(time.Now()) // Ready with another checksum is not the upload
	e.replica("pending", "a", api.ReplicaReady, pending.Sha256)
	e.replica("all", "b", api.ReplicaReady, all.Sha256)
	collect(time.Now(), pending.UploadId, all.UploadId)
	// The orphan goes after the TTL, not before.
	collect(time.Now().Add(23 * time.Hour))
	collect(time.Now().Add(25*time.Hour), orphan.UploadId)
}

// pusher plays an agent's exporter: it answers export requests for agent
// with push(req, stream).
func (e *stageEnv) pusher(agent string, push func(*sanbootv1.ExportRequest, sanbootv1.AgentData_PushExportClient)) {
	ctx, cancel := context.WithCancel(e.ctx)
	e.t.Cleanup(cancel)
	wch := e.cli.Watch(ctx, api.ExportsPrefix(agent), clientv3.WithPrefix())
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				var req sanbootv1.ExportRequest
				if proto.Unmarshal(ev.Kv.Value, &req) != nil {
					continue
				}
				st, err := e.data.PushExport(ctx)
				if err != nil {
					continue
				}
				go push(&req, st)
			}
		}
	}()
}

func header(req *sanbootv1.ExportRequest, agent string, size int64, msg string) *sanbootv1.PushExportRequest {
	return &sanbootv1.PushExportRequest{Part: &sanbootv1.PushExportRequest_Header{Header: &sanbootv1.PushExportHeader{
		ExportId: req.ExportId, Agent: agent, SizeBytes: size, Error: msg}}}
}

func (e *stageEnv) export(ctx context.Context, name string) ([]byte, error) {
	st, err := e.api.ExportImage(ctx, &sanbootv1.GetRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return recvData(st)
}

func TestExportRelaysWhatTheAgentPushes(t *testing.T) {
	e := startStaging(t, staging.Options{})
	data := pattern(3<<20 + 1024)
	ag, err := fakeagent.Register(e.ctx, e.cli, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"img", "broken"} {
		if _, err := e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.ImageSpec{SizeBytes: int64(len(data)), Agents: []string{"a"}}}}); err != nil {
			t.Fatal(err)
		}
		if err := ag.SetReplica(e.ctx, api.DefaultProject, name, api.ReplicaReady); err != nil {
			t.Fatal(err)
		}
	}
	e.pusher("a", func(req *sanbootv1.ExportRequest, st sanbootv1.AgentData_PushExportClient) {
		if req.Member != member || req.Project != api.DefaultProject {
			st.Send(header(req, "a", 0, "bad request"))
			st.CloseAndRecv()
			return
		}
		if req.Image == "broken" {
			st.Send(header(req, "a", 0, "image default/broken: not found in this agent's store"))
			st.CloseAndRecv()
			return
		}
		st.Send(header(req, "a", int64(len(data)), ""))
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 100000)
			if st.Send(&sanbootv1.PushExportRequest{Part: &sanbootv1.PushExportRequest_Chunk{Chunk: rest[:n]}}) != nil {
				break
			}
			rest = rest[n:]
		}
		st.CloseAndRecv()
	})

	got, err := e.export(e.ctx, "img")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("export: %d bytes, %v; want the %d pushed", len(got), err, len(data))
	}
	_, err = e.export(e.ctx, "broken")
	wantCode(t, err, codes.FailedPrecondition, `agent "a"`, "not found in this agent's store")
	_, err = e.export(e.ctx, "nope")
	wantCode(t, err, codes.NotFound)

	// The request keys went with the exports' leases.
	eventually.True(t, "no export request left", func() bool {
		r, err := e.cli.Get(e.ctx, api.ExportsPrefix(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 0
	}, eventually.Seen(func() string { return "export keys remain" }))

	// No live agent with a Ready replica: refused at once.
	if err := ag.Revoke(e.ctx); err != nil {
		t.Fatal(err)
	}
	_, err = e.export(e.ctx, "img")
	wantCode(t, err, codes.FailedPrecondition, "no live agent", "agent unavailable")
}

// A push for an export nobody waits for, or by another agent, is refused.
func TestPushExportForUnknownExportIsRefused(t *testing.T) {
	e := startStaging(t, staging.Options{})
	st, err := e.data.PushExport(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(header(&sanbootv1.ExportRequest{ExportId: "nope"}, "a", 10, ""))
	_, err = st.CloseAndRecv()
	wantCode(t, err, codes.NotFound, "no export")
}

// The client goes away mid-export: the push is cut and the request key
// goes with the export's lease.
func TestExportClientGoneStopsThePush(t *testing.T) {
	e := startStaging(t, staging.Options{})
	ag, err := fakeagent.Register(e.ctx, e.cli, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 40}}}); err != nil {
		t.Fatal(err)
	}
	if err := ag.SetReplica(e.ctx, api.DefaultProject, "img", api.ReplicaReady); err != nil {
		t.Fatal(err)
	}
	pushErr := make(chan error, 1)
	e.pusher("a", func(req *sanbootv1.ExportRequest, st sanbootv1.AgentData_PushExportClient) {
		st.Send(header(req, "a", 1<<40, ""))
		chunk := pattern(64 << 10)
		for {
			if err := st.Send(&sanbootv1.PushExportRequest{Part: &sanbootv1.PushExportRequest_Chunk{Chunk: chunk}}); err != nil {
				_, err = st.CloseAndRecv()
				pushErr <- err
				return
			}
		}
	})
	ctx, cancel := context.WithCancel(e.ctx)
	st, err := e.api.ExportImage(ctx, &sanbootv1.GetRequest{Name: "img"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-pushErr:
		wantCode(t, err, codes.Canceled, "went away")
	case <-time.After(30 * time.Second):
		t.Fatal("the push went on after the export's client went away")
	}
	eventually.True(t, "no export request left", func() bool {
		r, err := e.cli.Get(e.ctx, api.ExportsPrefix(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 0
	}, eventually.Seen(func() string { return "export keys remain" }))
}
