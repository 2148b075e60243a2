package apiserver_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
)

// env is a real etcd member, an API server on a loopback port, a scheduler
// and a client of the API (cptest.StartAPI).
type env struct {
	t     testing.TB
	etcd  *etcdtest.Member
	cli   *clientv3.Client // for fakes and checks, straight to etcd
	api   sanbootv1.SanbootClient
	conn  *grpc.ClientConn
	ctx   context.Context
	log   *slog.Logger
	proxy *etcdtest.Proxy // between the API server and etcd, when asked for
	srv   *apiserver.Server
	hold  *apiserver.CacheHold // the API server's cache, held back on demand
}

type option func(*envOptions)

type envOptions struct {
	proxy       bool
	watchBuffer int
	noScheduler bool
}

// withoutScheduler runs no scheduler: a node is placed only by the API
// server, when it creates it (placenew.go).
func withoutScheduler(o *envOptions) { o.noScheduler = true }

// watchBuffer sets the API server's WatchBuffer.
func watchBuffer(n int) option { return func(o *envOptions) { o.watchBuffer = n } }

// throughProxy puts an etcdtest.Proxy between the API server and etcd.
func throughProxy(o *envOptions) { o.proxy = true }

func start(t testing.TB, opts ...option) *env {
	t.Helper()
	var o envOptions
	for _, f := range opts {
		f(&o)
	}
	a := cptest.StartAPI(t, cptest.Options{Config: apiserver.Config{WatchBuffer: o.watchBuffer}, Scheduler: !o.noScheduler, EtcdProxy: o.proxy})
	return &env{t: t, etcd: a.Etcd, cli: a.Client, api: a.API, conn: a.Conn, ctx: a.Ctx, log: a.Log, proxy: a.Proxy,
		srv: a.Server, hold: apiserver.HoldCache(a.Server)}
}

// image creates an image through the API.
func (e *env) image(project, name string) *sanbootv1.Image {
	e.t.Helper()
	resp, err := e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 1 << 20},
	}})
	if err != nil {
		e.t.Fatalf("PutImage %s: %v", name, err)
	}
	return resp.Image
}

// node creates a node through the API.
func (e *env) node(name, image string) *sanbootv1.Node {
	e.t.Helper()
	resp, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: newNode(name, image)})
	if err != nil {
		e.t.Fatalf("PutNode %s: %v", name, err)
	}
	return resp.Node
}

func newNode(name, image string) *sanbootv1.Node {
	return &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.NodeSpec{Image: image}}
}

// agent registers a fake agent holding a Ready replica of images.
func (e *env) agent(name string, ttl int64, images ...string) *fakeagent.Agent {
	e.t.Helper()
	a, err := fakeagent.Register(e.ctx, e.cli, name, ttl)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, im := range images {
		if err := a.SetReplica(e.ctx, api.DefaultProject, im, api.ReplicaReady); err != nil {
			e.t.Fatal(err)
		}
	}
	return a
}

// waitNode polls GetNode until ok holds.
func (e *env) waitNode(name string, ok func(*sanbootv1.Node) bool) *sanbootv1.Node {
	e.t.Helper()
	var n *sanbootv1.Node
	var err error
	eventually.True(e.t, "node "+name, func() bool {
		n, err = e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: name})
		return err == nil && ok(n)
	}, eventually.Seen(func() string { return n.GetStatus().String() + " " + errString(err) }))
	return n
}

func phase(p string) func(*sanbootv1.Node) bool {
	return func(n *sanbootv1.Node) bool { return n.GetStatus().GetPhase() == p }
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// wantCode fails unless err is a status with code and a message holding
// every one of parts.
func wantCode(t testing.TB, err error, code codes.Code, parts ...string) {
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

// watcher collects the events of one WatchNodes stream.
type watcher struct {
	*objEvents[sanbootv1.NodeEvent]
}

func (e *env) watch(req *sanbootv1.WatchNodesRequest) *watcher {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	e.t.Cleanup(cancel)
	stream, err := e.api.WatchNodes(ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	return &watcher{recvAll(e.t, stream)}
}

// initial reads the initial events up to SYNCED and returns the nodes.
func (w *watcher) initial() []*sanbootv1.Node {
	w.t.Helper()
	var nodes []*sanbootv1.Node
	for {
		ev := w.next()
		switch ev.Type {
		case sanbootv1.NodeEvent_TYPE_INITIAL:
			nodes = append(nodes, ev.Node)
		case sanbootv1.NodeEvent_TYPE_SYNCED:
			return nodes
		default:
			w.t.Fatalf("event %v before SYNCED", ev.Type)
		}
	}
}

func isEvent(typ sanbootv1.NodeEvent_Type, name, phase string) func(*sanbootv1.NodeEvent) bool {
	return func(ev *sanbootv1.NodeEvent) bool {
		return ev.Type == typ && ev.Node.GetMetadata().GetName() == name && (phase == "" || ev.Node.GetStatus().GetPhase() == phase)
	}
}
