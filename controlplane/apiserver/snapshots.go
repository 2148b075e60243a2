package apiserver

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
	"github.com/sanboot/sanboot/internal/kv"
)

// Images made from other objects.
//
// A snapshot (source snapshot{node}) is the node's disk, fsynced and
// reflinked into an image by the agent that holds the disk. The API server
// resolves it when the image is created: the node must exist, must not be
// being deleted and must be placed; spec.agents becomes exactly the node's
// agent (the disk lives there, so no other agent can make the image),
// spec.sizeBytes the size of the node's image, and spec.parent the node's
// image. Both keep the EFI boot path of the image they come from unless
// they name their own (spec.efiBootPath). A copy (source copy{image}) is reflinked by every agent that holds
// the source image: spec.agents becomes the source's agents, spec.sizeBytes
// the source's size unless a larger one is asked for, and spec.parent the
// source's parent (a copy of a snapshot is a snapshot of the same parent,
// so that image mv keeps a snapshot one). Users never set spec.parent; what
// they send is overwritten.
//
// An image that already exists with the same source keeps what was
// resolved when it was created: a snapshot outlives its node.

// resolveSource fills in the parts of spec the API server owns, given the
// stored image (nil when it is new), and returns the comparisons the write
// must add so that what it resolved still holds when it commits.
func (s *Server) resolveSource(ctx context.Context, ref state.Ref, spec *sanbootv1.ImageSpec, old *sanbootv1.Image) ([]clientv3.Cmp, error) {
	switch src := spec.GetSource().GetKind().(type) {
	case *sanbootv1.ImageSource_Snapshot, *sanbootv1.ImageSource_Copy:
		if o := old.GetSpec(); o != nil && proto.Equal(o.GetSource(), spec.GetSource()) {
			spec.SizeBytes, spec.Agents, spec.Parent = o.GetSizeBytes(), slices.Clone(o.GetAgents()), o.GetParent()
			spec.EfiBootPath = cmp.Or(spec.GetEfiBootPath(), o.GetEfiBootPath())
			return nil, nil
		}
		if sn, ok := src.(*sanbootv1.ImageSource_Snapshot); ok {
			return s.resolveSnapshot(ctx, ref, spec, sn.Snapshot.GetNode())
		}
		return s.resolveCopy(ctx, ref, spec, src.(*sanbootv1.ImageSource_Copy).Copy.GetImage())
	default:
		spec.Parent = ""
		return nil, nil
	}
}

func (s *Server) resolveSnapshot(ctx context.Context, ref state.Ref, spec *sanbootv1.ImageSpec, node string) ([]clientv3.Cmp, error) {
	nref := state.Ref{Project: ref.Project, Name: node}
	st, err := s.read(ctx, get(api.NodeKey(nref.Project, nref.Name)), get(api.PlacementKey(nref.Project, nref.Name)))
	if err != nil {
		return nil, err
	}
	n, ok := st.Nodes[nref]
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "spec.source.snapshot.node: node %q does not exist in project %q: snapshot an existing node",
			node, nref.Project)
	}
	if n.Msg.GetMetadata().GetDeleteTime() != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is being deleted: its disk is going away, so it cannot be snapshotted",
			describe("node", nref))
	}
	pl := st.Placements[nref].Msg
	agent := pl.GetAgent()
	if agent == "" {
		why := pl.GetMessage()
		if why == "" {
			why = "waiting for the scheduler"
		}
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not placed on an agent yet (%s), so it has no disk to snapshot: "+
			"wait until the node is Ready, then snapshot it", describe("node", nref), why)
	}
	parent := n.Msg.GetSpec().GetImage()
	pref := state.Ref{Project: ref.Project, Name: parent}
	ist, err := s.read(ctx, get(api.ImageKey(pref.Project, pref.Name)))
	if err != nil {
		return nil, err
	}
	img, ok := ist.Images[pref]
	if !ok { // PutNode and DeleteImage never let this happen
		return nil, status.Errorf(codes.FailedPrecondition, "the image %q of %s does not exist, so the size of its disk is unknown",
			parent, describe("node", nref))
	}
	spec.SizeBytes = img.Msg.GetSpec().GetSizeBytes()
	spec.Agents = []string{agent}
	spec.Parent = parent
	spec.EfiBootPath = cmp.Or(spec.GetEfiBootPath(), img.Msg.GetSpec().GetEfiBootPath())
	return []clientv3.Cmp{
		// The node is neither deleted nor being deleted meanwhile (either
		// changes its key), so its placement, which is sticky, still holds.
		kv.Unchanged(api.NodeKey(nref.Project, nref.Name), n.ModRevision),
		kv.Unchanged(api.ImageKey(pref.Project, pref.Name), img.ModRevision),
	}, nil
}

func (s *Server) resolveCopy(ctx context.Context, ref state.Ref, spec *sanbootv1.ImageSpec, from string) ([]clientv3.Cmp, error) {
	if from == ref.Name {
		return nil, status.Errorf(codes.InvalidArgument, "spec.source.copy.image: %s cannot be a copy of itself: name another image",
			describe("image", ref))
	}
	sref := state.Ref{Project: ref.Project, Name: from}
	st, err := s.read(ctx, get(api.ImageKey(sref.Project, sref.Name)))
	if err != nil {
		return nil, err
	}
	src, ok := st.Images[sref]
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "spec.source.copy.image: image %q does not exist in project %q: copy an existing image",
			from, sref.Project)
	}
	size := src.Msg.GetSpec().GetSizeBytes()
	switch {
	case spec.SizeBytes == 0:
		spec.SizeBytes = size
	case spec.SizeBytes < size:
		return nil, status.Errorf(codes.InvalidArgument, "spec.sizeBytes: %d is smaller than the %d bytes of image %q: a copy may grow, never shrink; "+
			"leave the size out to copy it as it is", spec.SizeBytes, size, from)
	}
	spec.Agents = slices.Clone(src.Msg.GetSpec().GetAgents())
	spec.Parent = src.Msg.GetSpec().GetParent()
	spec.EfiBootPath = cmp.Or(spec.GetEfiBootPath(), src.Msg.GetSpec().GetEfiBootPath())
	return []clientv3.Cmp{kv.Unchanged(api.ImageKey(sref.Project, sref.Name), src.ModRevision)}, nil
}

// writeImage writes rec if the image's mod_revision is still modRev and
// every guard holds; kv.ErrConflict otherwise.
func (s *Server) writeImage(ctx context.Context, ref state.Ref, modRev int64, rec *sanbootv1.Image, guards []clientv3.Cmp) (int64, error) {
	key := api.ImageKey(ref.Project, ref.Name)
	put, err := kv.PutOp(key, rec)
	if err != nil {
		return 0, apiError(err)
	}
	return s.write(ctx, append([]clientv3.Cmp{kv.Unchanged(key, modRev)}, guards...), put)
}

// snapshotsOf returns the sorted names of the images of ref's project whose
// parent is ref. The store must hold the project's images.
func snapshotsOf(st *state.Store, ref state.Ref) []string {
	var out []string
	for r, im := range st.Images {
		if r.Project == ref.Project && r.Name != ref.Name && im.Msg.GetSpec().GetParent() == ref.Name {
			out = append(out, r.Name)
		}
	}
	slices.Sort(out)
	return out
}

// copiesInProgress names the images of ref's project copied from ref that
// are not Ready yet: their agents still read ref. The store must hold the
// project's images and replicas, and the agents.
func copiesInProgress(st *state.Store, ref state.Ref) []string {
	var out []string
	for r, im := range st.Images {
		if r.Project != ref.Project || im.Msg.GetSpec().GetSource().GetCopy().GetImage() != ref.Name {
			continue
		}
		if v := view.Image(st, r, nil); v.GetStatus().GetPhase() != api.ReplicaReady {
			out = append(out, r.Name)
		}
	}
	slices.Sort(out)
	return out
}

// refuseIfUsed is FailedPrecondition, naming them, when nodes use image
// ref or snapshots have it as their parent. The store must hold the
// project's nodes and images.
func refuseIfUsed(st *state.Store, ref state.Ref) error {
	var users []string
	if nodes := view.UsedBy(st)[ref]; len(nodes) > 0 {
		users = append(users, "nodes "+strings.Join(nodes, ", "))
	}
	if snaps := snapshotsOf(st, ref); len(snaps) > 0 {
		users = append(users, "snapshots "+strings.Join(snaps, ", "))
	}
	if copies := copiesInProgress(st, ref); len(copies) > 0 {
		users = append(users, "copies still being made "+strings.Join(copies, ", "))
	}
	if len(users) == 0 {
		return nil
	}
	return status.Error(codes.FailedPrecondition, fmt.Sprintf("%s is used by %s: delete them first", describe("image", ref), strings.Join(users, " and by ")))
}
