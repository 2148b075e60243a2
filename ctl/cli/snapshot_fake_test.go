package cli

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// snapFake is a FAKE of the API for the snapshot, cp and mv commands: the
// fakeSanboot underneath, plus what the real API server does for images
// made from other objects (resolving a snapshot's agent, size and parent,
// a copy's size, agents and parent) and for image removal (refused while
// nodes or snapshots depend on the image). It plays the agents through
// readyAfter and failAfter.
type snapFake struct {
	*fakeSanboot

	// readyAfter[name] = n: the n-th GetImage of name (1-based) and later
	// find it Ready on its agents; failAfter likewise Failed.
	readyAfter, failAfter map[string]int
	gets                  map[string]int
	// onReady runs (with the lock held) when an image turns Ready.
	onReady func(f *snapFake, name string)
}

func newSnapFake(t *testing.T) (*snapFake, string) {
	base, _ := seededFake(t)
	f := &snapFake{fakeSanboot: base, readyAfter: map[string]int{}, failAfter: map[string]int{}, gets: map[string]int{}}
	seedSnapshots(f)
	return f, serveSanboot(t, f)
}

func snapSource(node string) *sanbootv1.ImageSource {
	return &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: node}}}
}

// seedSnapshots adds snapshots to the seeded fake: one of node-01 (Ready),
// a copy of it, and one in project lab.
func seedSnapshots(f *snapFake) {
	ready := func(agent string) *sanbootv1.ImageStatus {
		return &sanbootv1.ImageStatus{Phase: api.ReplicaReady, Replicas: []*sanbootv1.ImageReplica{
			{Agent: agent, Phase: api.ReplicaReady, SizeBytes: 10 << 30, ObservedGeneration: 1}}}
	}
	f.addImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "node-01-snap", Generation: 1, CreateTime: ago(2 * time.Hour)},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 10 << 30, Agents: []string{"storage-1"}, Parent: "debian-13", Source: snapSource("node-01")},
		Status:   ready("storage-1"),
	})
	f.addImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "node-01-snap-copy", Generation: 1, CreateTime: ago(time.Hour)},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 10 << 30, Agents: []string{"storage-1"}, Parent: "debian-13", Source: copySource("node-01-snap")},
		Status: &sanbootv1.ImageStatus{Phase: api.ReplicaPending, UsedBy: []string{}, Replicas: []*sanbootv1.ImageReplica{
			{Agent: "storage-1", Phase: api.ReplicaPending, Message: "importing", ObservedGeneration: 1}}},
	})
	f.addImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "lab", Name: "gpu-01-base", Generation: 1, CreateTime: ago(3 * 24 * time.Hour)},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 20 << 30, Agents: []string{"storage-1"}, Parent: "ubuntu-24", Source: snapSource("gpu-01")},
		Status:   ready("storage-1"),
	})
}

func (f *snapFake) PutImage(ctx context.Context, req *sanbootv1.PutImageRequest) (*sanbootv1.PutImageResponse, error) {
	req = proto.CloneOf(req)
	im := req.GetImage()
	project := api.ProjectOrDefault(im.GetMetadata().GetProject())
	spec := im.GetSpec()
	f.mu.Lock()
	switch src := spec.GetSource().GetKind().(type) {
	case *sanbootv1.ImageSource_Snapshot:
		n, ok := f.nodes[key(project, src.Snapshot.GetNode())]
		switch {
		case !ok:
			f.mu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "spec.source.snapshot.node: node %q does not exist in project %q: snapshot an existing node", src.Snapshot.GetNode(), project)
		case n.Metadata.DeleteTime != nil:
			f.mu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "node %q in project %q is being deleted: its disk is going away, so it cannot be snapshotted", n.Metadata.Name, project)
		case n.GetStatus().GetAgent() == "":
			f.mu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "node %q in project %q is not placed on an agent yet (%s), so it has no disk to snapshot: wait until the node is Ready, then snapshot it",
				n.Metadata.Name, project, n.GetStatus().GetMessage())
		}
		spec.Agents, spec.Parent = []string{n.Status.Agent}, n.Spec.Image
		spec.SizeBytes = f.images[key(project, n.Spec.Image)].GetSpec().GetSizeBytes()
	case *sanbootv1.ImageSource_Copy:
		from, ok := f.images[key(project, src.Copy.GetImage())]
		if !ok {
			f.mu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "spec.source.copy.image: image %q does not exist in project %q: copy an existing image", src.Copy.GetImage(), project)
		}
		spec.SizeBytes, spec.Agents, spec.Parent = from.Spec.SizeBytes, slices.Clone(from.Spec.Agents), from.Spec.Parent
	default:
		spec.Parent = ""
	}
	f.mu.Unlock()
	return f.fakeSanboot.PutImage(ctx, req)
}

func (f *snapFake) GetImage(ctx context.Context, req *sanbootv1.GetRequest) (*sanbootv1.Image, error) {
	f.mu.Lock()
	name := req.GetName()
	f.gets[name]++
	if im, ok := f.images[key(req.GetProject(), name)]; ok {
		phase := ""
		if n := f.readyAfter[name]; n > 0 && f.gets[name] >= n && im.Status.GetPhase() != api.ReplicaReady {
			phase = api.ReplicaReady
		}
		if n := f.failAfter[name]; n > 0 && f.gets[name] >= n {
			phase = api.ReplicaFailed
		}
		if phase != "" {
			agents := im.Spec.Agents
			if len(agents) == 0 {
				agents = []string{"storage-1"}
			}
			im.Status = &sanbootv1.ImageStatus{Phase: phase}
			for _, a := range agents {
				r := &sanbootv1.ImageReplica{Agent: a, Phase: phase, ObservedGeneration: im.Metadata.Generation}
				if phase == api.ReplicaFailed {
					r.Message = "copy: no space left on device; the agent retries"
				}
				im.Status.Replicas = append(im.Status.Replicas, r)
			}
			if phase == api.ReplicaReady && f.onReady != nil {
				f.onReady(f, name)
			}
		}
	}
	f.mu.Unlock()
	return f.fakeSanboot.GetImage(ctx, req)
}

func (f *snapFake) DeleteImage(ctx context.Context, req *sanbootv1.DeleteRequest) (*sanbootv1.DeleteResponse, error) {
	f.mu.Lock()
	project, name := api.ProjectOrDefault(req.GetProject()), req.GetName()
	var nodes, snaps []string
	for _, n := range f.nodes {
		if n.Metadata.Project == project && n.Spec.Image == name {
			nodes = append(nodes, n.Metadata.Name)
		}
	}
	for _, im := range f.images {
		if im.Metadata.Project == project && im.Spec.GetParent() == name {
			snaps = append(snaps, im.Metadata.Name)
		}
	}
	f.mu.Unlock()
	slices.Sort(nodes)
	slices.Sort(snaps)
	var users []string
	if len(nodes) > 0 {
		users = append(users, "nodes "+strings.Join(nodes, ", "))
	}
	if len(snaps) > 0 {
		users = append(users, "snapshots "+strings.Join(snaps, ", "))
	}
	if len(users) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "image %q in project %q is used by %s: delete them first", name, project, strings.Join(users, " and by "))
	}
	return f.fakeSanboot.DeleteImage(ctx, req)
}

func (f *snapFake) image(t *testing.T, project, name string) (*sanbootv1.Image, bool) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[key(project, name)]
	return proto.CloneOf(im), ok
}
