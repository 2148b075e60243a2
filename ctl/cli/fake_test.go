package cli

import (
	"context"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// fakeSanboot is an in-memory FAKE of the sanboot API for the CLI's unit
// tests. It implements the calls sanbootctl makes with the semantics the
// real API server promises (create modes, generations, NotFound, watch with
// INITIAL then SYNCED), and lets a test change node status to drive waits.
// It has no scheduler and no agents: tests play their part.
type fakeSanboot struct {
	sanbootv1.UnimplementedSanbootServer

	mu       sync.Mutex
	now      time.Time // create_time of objects the fake creates
	nodes    map[string]*sanbootv1.Node
	images   map[string]*sanbootv1.Image
	agents   map[string]*sanbootv1.Agent
	watchers map[int]*fakeWatcher
	nextID   int
	rev      int64
	// calls counts calls by method name ("GetNode", "ListNodes", ...).
	calls map[string]int

	// failWatches makes that many watches end with Unavailable right
	// after TYPE_SYNCED, the way a stream breaks when a member goes away.
	failWatches int
	// refuseWatches makes that many watches end with Unavailable before
	// they send anything, as when no member can be reached.
	refuseWatches int

	// synced receives the project of every watch once it has sent
	// TYPE_SYNCED: a test waits on it before changing state, so that the
	// change arrives as a watch event.
	synced chan string

	// io is the state of UploadImage and ExportImage (imageio_fake_test.go).
	io fakeImageIO

	// lenientImages lets PutNode accept nodes whose image does not exist
	// (the real API refuses them with FailedPrecondition).
	lenientImages bool
	// readyImages makes new images Ready at once.
	readyImages bool
	// events are what ListNodeEvents returns, by key(project, name).
	events map[string][]*sanbootv1.Event
}

// writes counts the calls that change state (dry runs do not).
func (f *fakeSanboot) writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range []string{"PutNode", "PutImage", "DeleteNode", "DeleteImage", "UploadImage"} {
		n += f.calls[m]
	}
	return n
}

func (f *fakeSanboot) ListNodeEvents(_ context.Context, req *sanbootv1.GetRequest) (*sanbootv1.ListEventsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("ListNodeEvents")
	k := key(req.GetProject(), req.GetName())
	if _, ok := f.nodes[k]; !ok {
		return nil, status.Errorf(codes.NotFound, "node %q not found in project %q", req.GetName(), api.ProjectOrDefault(req.GetProject()))
	}
	return &sanbootv1.ListEventsResponse{Events: f.events[k]}, nil
}

type fakeWatcher struct {
	req    *sanbootv1.WatchNodesRequest
	events chan *sanbootv1.NodeEvent
}

func newFakeSanboot(now time.Time) *fakeSanboot {
	return &fakeSanboot{
		now:      now,
		nodes:    map[string]*sanbootv1.Node{},
		images:   map[string]*sanbootv1.Image{},
		agents:   map[string]*sanbootv1.Agent{},
		watchers: map[int]*fakeWatcher{},
		calls:    map[string]int{},
		synced:   make(chan string, 64),
	}
}

// serve runs f on a random loopback port until the test ends and returns
// the address.
func (f *fakeSanboot) serve(t *testing.T) string { return serveSanboot(t, f) }

// serveSanboot runs a fake API (fakeSanboot, or one that wraps it) on a
// random loopback port until the test ends and returns the address.
func serveSanboot(t *testing.T, f sanbootv1.SanbootServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sanbootv1.RegisterSanbootServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// fakeObject is a node or an image of the fake.
type fakeObject interface {
	proto.Message
	GetMetadata() *sanbootv1.ObjectMeta
}

// getObject is Get of one kind: a copy, or NotFound.
func getObject[T fakeObject](objs map[string]T, kind string, req *sanbootv1.GetRequest) (T, error) {
	o, ok := objs[key(req.GetProject(), req.GetName())]
	if !ok {
		var none T
		return none, status.Errorf(codes.NotFound, "%s %q not found in project %q", kind, req.GetName(), api.ProjectOrDefault(req.GetProject()))
	}
	return proto.Clone(o).(T), nil
}

// listObjects is List of one kind: copies of the objects of the project
// (or of all) that the label selector picks.
func listObjects[T fakeObject](objs map[string]T, req *sanbootv1.ListRequest) ([]T, error) {
	sel, err := api.ParseSelector(req.GetLabelSelector())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var out []T
	for _, o := range objs {
		m := o.GetMetadata()
		if (req.GetAllProjects() || m.GetProject() == api.ProjectOrDefault(req.GetProject())) && sel.Matches(m.GetLabels()) {
			out = append(out, proto.Clone(o).(T))
		}
	}
	return out, nil
}

func key(project, name string) string { return api.ProjectOrDefault(project) + "/" + name }

func (f *fakeSanboot) count(method string) {
	f.calls[method]++
}

func (f *fakeSanboot) callCount(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// ---------------------------------------------------------------- nodes

func (f *fakeSanboot) PutNode(_ context.Context, req *sanbootv1.PutNodeRequest) (*sanbootv1.PutNodeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.GetDryRun() {
		f.count("PutNode(dry-run)")
	} else {
		f.count("PutNode")
	}
	n := proto.Clone(req.GetNode()).(*sanbootv1.Node)
	if err := api.ValidateNode(n); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	k := key(n.Metadata.Project, n.Metadata.Name)
	if _, ok := f.images[key(n.Metadata.Project, n.Spec.Image)]; !ok && !f.lenientImages && f.nodes[k] == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "spec.image: image %q does not exist in project %q: create the image first", n.Spec.Image, n.Metadata.Project)
	}
	if old, ok := f.nodes[k]; ok {
		if old.Spec.GetImage() != n.Spec.Image && req.GetMode() == sanbootv1.PutMode_PUT_MODE_APPLY {
			return nil, status.Errorf(codes.InvalidArgument, "spec.image: cannot change from %q to %q", old.Spec.GetImage(), n.Spec.Image)
		}
		specSame, labelsSame := proto.Equal(old.Spec, n.Spec), maps.Equal(old.Metadata.Labels, n.Metadata.Labels)
		if specSame && (labelsSame || req.GetMode() == sanbootv1.PutMode_PUT_MODE_CREATE) {
			return &sanbootv1.PutNodeResponse{Node: proto.Clone(old).(*sanbootv1.Node), Result: sanbootv1.PutResult_PUT_RESULT_UNCHANGED}, nil
		}
		if req.GetMode() == sanbootv1.PutMode_PUT_MODE_CREATE {
			return nil, status.Errorf(codes.AlreadyExists, "node %q already exists in project %q with a different spec", n.Metadata.Name, n.Metadata.Project)
		}
		upd := proto.Clone(old).(*sanbootv1.Node)
		upd.Metadata.Labels = n.Metadata.Labels
		if !specSame {
			upd.Spec = n.Spec
			upd.Metadata.Generation++
		}
		if !req.GetDryRun() {
			f.nodes[k] = upd
			f.notify(sanbootv1.NodeEvent_TYPE_MODIFIED, upd)
		}
		return &sanbootv1.PutNodeResponse{Node: proto.Clone(upd).(*sanbootv1.Node), Result: sanbootv1.PutResult_PUT_RESULT_CONFIGURED}, nil
	}
	if req.GetDryRun() {
		n.Metadata.Generation = 1
		return &sanbootv1.PutNodeResponse{Node: n, Result: sanbootv1.PutResult_PUT_RESULT_CREATED}, nil
	}
	n.Metadata.Generation = 1
	n.Metadata.CreateTime = timestamppb.New(f.now)
	n.Status = &sanbootv1.NodeStatus{Phase: api.PhasePending, Message: "waiting for the scheduler"}
	f.nodes[k] = n
	f.notify(sanbootv1.NodeEvent_TYPE_ADDED, n)
	return &sanbootv1.PutNodeResponse{Node: proto.Clone(n).(*sanbootv1.Node), Result: sanbootv1.PutResult_PUT_RESULT_CREATED}, nil
}

func (f *fakeSanboot) GetNode(_ context.Context, req *sanbootv1.GetRequest) (*sanbootv1.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("GetNode")
	return getObject(f.nodes, "node", req)
}

func (f *fakeSanboot) ListNodes(_ context.Context, req *sanbootv1.ListRequest) (*sanbootv1.ListNodesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("ListNodes")
	nodes, err := listObjects(f.nodes, req)
	return &sanbootv1.ListNodesResponse{Nodes: nodes, Revision: f.rev}, err
}

func (f *fakeSanboot) DeleteNode(_ context.Context, req *sanbootv1.DeleteRequest) (*sanbootv1.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("DeleteNode")
	n, ok := f.nodes[key(req.GetProject(), req.GetName())]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "node %q not found in project %q", req.GetName(), api.ProjectOrDefault(req.GetProject()))
	}
	if n.Metadata.DeleteTime == nil {
		n.Metadata.DeleteTime = timestamppb.New(f.now)
		n.Status.Phase = api.PhaseDeleting
		n.Status.Message = ""
		if req.GetKeepDisk() || n.GetSpec().GetKeepDisk() {
			n.Spec.KeepDisk = true
			if agent := n.GetStatus().GetAgent(); agent != "" {
				// As the API server does: a snapshot image written with the deletion.
				name := keepDiskName(n.Metadata.Name, f.now)
				f.images[key(n.Metadata.Project, name)] = &sanbootv1.Image{
					Metadata: &sanbootv1.ObjectMeta{Project: n.Metadata.Project, Name: name, Generation: 1, CreateTime: timestamppb.New(f.now)},
					Spec: &sanbootv1.ImageSpec{Agents: []string{agent}, Parent: n.Spec.Image,
						Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: n.Metadata.Name}}}},
					Status: &sanbootv1.ImageStatus{Phase: api.ReplicaReady, Replicas: []*sanbootv1.ImageReplica{{Agent: agent, Phase: api.ReplicaReady, ObservedGeneration: 1}}},
				}
				out := proto.CloneOf(n)
				out.Status.Message = keptDiskPrefix + name
				f.notify(sanbootv1.NodeEvent_TYPE_MODIFIED, n)
				return out, nil
			}
		}
		f.notify(sanbootv1.NodeEvent_TYPE_MODIFIED, n)
	}
	return proto.Clone(n).(*sanbootv1.Node), nil
}

func (f *fakeSanboot) WatchNodes(req *sanbootv1.WatchNodesRequest, stream grpc.ServerStreamingServer[sanbootv1.NodeEvent]) error {
	f.mu.Lock()
	f.count("WatchNodes")
	if f.refuseWatches > 0 {
		f.refuseWatches--
		f.mu.Unlock()
		return status.Error(codes.Unavailable, "fake: no member reachable")
	}
	w := &fakeWatcher{req: req, events: make(chan *sanbootv1.NodeEvent, 1024)}
	var initial []*sanbootv1.NodeEvent
	for _, n := range f.nodes {
		if w.matches(n) {
			initial = append(initial, &sanbootv1.NodeEvent{Type: sanbootv1.NodeEvent_TYPE_INITIAL, Node: proto.Clone(n).(*sanbootv1.Node), Revision: f.rev})
		}
	}
	initial = append(initial, &sanbootv1.NodeEvent{Type: sanbootv1.NodeEvent_TYPE_SYNCED, Revision: f.rev})
	id := f.nextID
	f.nextID++
	f.watchers[id] = w
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.watchers, id)
		f.mu.Unlock()
	}()

	for _, ev := range initial {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	select {
	case f.synced <- api.ProjectOrDefault(req.GetProject()):
	default: // nobody is listening
	}
	f.mu.Lock()
	fail := f.failWatches > 0
	if fail {
		f.failWatches--
	}
	f.mu.Unlock()
	if fail {
		return status.Error(codes.Unavailable, "fake: member shutting down")
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev := <-w.events:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

func (w *fakeWatcher) matches(n *sanbootv1.Node) bool {
	if !w.req.GetAllProjects() && n.Metadata.Project != api.ProjectOrDefault(w.req.GetProject()) {
		return false
	}
	if len(w.req.GetNames()) > 0 && !slices.Contains(w.req.GetNames(), n.Metadata.Name) {
		return false
	}
	sel, err := api.ParseSelector(w.req.GetLabelSelector())
	return err == nil && sel.Matches(n.Metadata.Labels)
}

// notify sends an event to every matching watcher. f.mu is held.
func (f *fakeSanboot) notify(typ sanbootv1.NodeEvent_Type, n *sanbootv1.Node) {
	f.rev++
	for _, w := range f.watchers {
		if w.matches(n) {
			w.events <- &sanbootv1.NodeEvent{Type: typ, Node: proto.Clone(n).(*sanbootv1.Node), Revision: f.rev}
		}
	}
}

// setNodeStatus plays the agent: it replaces a node's status and sends
// TYPE_MODIFIED to the watchers.
func (f *fakeSanboot) setNodeStatus(t *testing.T, project, name string, st *sanbootv1.NodeStatus) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[key(project, name)]
	if !ok {
		t.Fatalf("fake: no node %s/%s", project, name)
	}
	n.Status = st
	f.notify(sanbootv1.NodeEvent_TYPE_MODIFIED, n)
}

// removeNode plays the scheduler finishing a deletion: the record goes and
// watchers get TYPE_DELETED.
func (f *fakeSanboot) removeNode(t *testing.T, project, name string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[key(project, name)]
	if !ok {
		t.Fatalf("fake: no node %s/%s", project, name)
	}
	delete(f.nodes, key(project, name))
	f.notify(sanbootv1.NodeEvent_TYPE_DELETED, n)
}

func (f *fakeSanboot) addNode(n *sanbootv1.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes[key(n.Metadata.Project, n.Metadata.Name)] = n
}

// --------------------------------------------------------------- images

func (f *fakeSanboot) PutImage(_ context.Context, req *sanbootv1.PutImageRequest) (*sanbootv1.PutImageResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.GetDryRun() {
		f.count("PutImage(dry-run)")
	} else {
		f.count("PutImage")
	}
	im := proto.Clone(req.GetImage()).(*sanbootv1.Image)
	if err := api.ValidateImage(im); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	k := key(im.Metadata.Project, im.Metadata.Name)
	if old, ok := f.images[k]; ok {
		specSame, labelsSame := proto.Equal(old.Spec, im.Spec), maps.Equal(old.Metadata.Labels, im.Metadata.Labels)
		if specSame && (labelsSame || req.GetMode() == sanbootv1.PutMode_PUT_MODE_CREATE) {
			return &sanbootv1.PutImageResponse{Image: old, Result: sanbootv1.PutResult_PUT_RESULT_UNCHANGED}, nil
		}
		if req.GetMode() == sanbootv1.PutMode_PUT_MODE_CREATE {
			return nil, status.Errorf(codes.AlreadyExists, "image %q already exists in project %q with a different spec", im.Metadata.Name, im.Metadata.Project)
		}
		upd := proto.Clone(old).(*sanbootv1.Image)
		upd.Metadata.Labels = im.Metadata.Labels
		if !specSame {
			upd.Spec = im.Spec
			upd.Metadata.Generation++
		}
		if !req.GetDryRun() {
			f.images[k] = upd
		}
		return &sanbootv1.PutImageResponse{Image: proto.Clone(upd).(*sanbootv1.Image), Result: sanbootv1.PutResult_PUT_RESULT_CONFIGURED}, nil
	}
	if req.GetDryRun() {
		im.Metadata.Generation = 1
		return &sanbootv1.PutImageResponse{Image: im, Result: sanbootv1.PutResult_PUT_RESULT_CREATED}, nil
	}
	im.Metadata.Generation = 1
	im.Metadata.CreateTime = timestamppb.New(f.now)
	im.Status = &sanbootv1.ImageStatus{Phase: "Pending"}
	if f.readyImages { // plays the agents: the image is Ready at once
		im.Status = &sanbootv1.ImageStatus{Phase: api.ReplicaReady, Replicas: []*sanbootv1.ImageReplica{
			{Agent: "storage-1", Phase: api.ReplicaReady, ObservedGeneration: 1}}}
	}
	f.images[k] = im
	return &sanbootv1.PutImageResponse{Image: im, Result: sanbootv1.PutResult_PUT_RESULT_CREATED}, nil
}

func (f *fakeSanboot) GetImage(_ context.Context, req *sanbootv1.GetRequest) (*sanbootv1.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("GetImage")
	return getObject(f.images, "image", req)
}

func (f *fakeSanboot) ListImages(_ context.Context, req *sanbootv1.ListRequest) (*sanbootv1.ListImagesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("ListImages")
	images, err := listObjects(f.images, req)
	return &sanbootv1.ListImagesResponse{Images: images, Revision: f.rev}, err
}

func (f *fakeSanboot) DeleteImage(_ context.Context, req *sanbootv1.DeleteRequest) (*sanbootv1.DeleteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("DeleteImage")
	k := key(req.GetProject(), req.GetName())
	im, ok := f.images[k]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "image %q not found in project %q", req.GetName(), api.ProjectOrDefault(req.GetProject()))
	}
	if im.Spec.Protected {
		return nil, status.Errorf(codes.FailedPrecondition, "image %q is protected: clear spec.protected first", req.GetName())
	}
	delete(f.images, k)
	return &sanbootv1.DeleteResponse{}, nil
}

func (f *fakeSanboot) addImage(im *sanbootv1.Image) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[key(im.Metadata.Project, im.Metadata.Name)] = im
}

// --------------------------------------------------------------- agents

func (f *fakeSanboot) ListAgents(context.Context, *sanbootv1.ListAgentsRequest) (*sanbootv1.ListAgentsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("ListAgents")
	resp := &sanbootv1.ListAgentsResponse{}
	for _, a := range f.agents {
		resp.Agents = append(resp.Agents, proto.Clone(a).(*sanbootv1.Agent))
	}
	return resp, nil
}

func (f *fakeSanboot) GetAgent(_ context.Context, req *sanbootv1.GetAgentRequest) (*sanbootv1.Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("GetAgent")
	a, ok := f.agents[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "agent %q not found", req.GetName())
	}
	return proto.Clone(a).(*sanbootv1.Agent), nil
}

func (f *fakeSanboot) addAgent(a *sanbootv1.Agent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents[a.Record.Name] = a
}

// keepDiskName (as the API server's KeptDiskName) is the image a node's disk is kept as: NODE-disk-<UTC time>,
// the node's name shortened so that the whole is a DNS label.
func keepDiskName(node string, now time.Time) string {
	suffix := "-disk-" + now.UTC().Format("20060102-150405")
	if max := 63 - len(suffix); len(node) > max {
		node = strings.TrimRight(node[:max], "-")
	}
	return node + suffix
}
