package apiserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
	"github.com/sanboot/sanboot/internal/kv"
)

// readNode reads what the view of one node joins, plus its image.
func (s *Server) readNode(ctx context.Context, ref state.Ref, image string) (*state.Store, error) {
	st, err := s.read(ctx, nodeReads(ref, image)...)
	if err != nil {
		return nil, err
	}
	return st, s.readStatus(ctx, st, ref)
}

// nodeReads are the reads of readNode.
func nodeReads(ref state.Ref, image string) []clientv3.Op {
	ops := []clientv3.Op{
		get(api.NodeKey(ref.Project, ref.Name)),
		get(api.PlacementKey(ref.Project, ref.Name)),
		listKeys(api.AlivePrefix()),
	}
	if image != "" {
		ops = append(ops, get(api.ImageKey(ref.Project, image)))
	}
	return ops
}

// readStatus adds to st, read for node ref with its placement, the status
// the node's agent reports, read at st's revision: a status key names its
// agent (api/keys.go), which only the placement tells.
func (s *Server) readStatus(ctx context.Context, st *state.Store, ref state.Ref) error {
	agent := st.Placements[ref].Msg.GetAgent()
	if agent == "" {
		return nil
	}
	resp, err := s.cli.Get(ctx, api.NodeStatusKey(ref.Project, ref.Name, agent), clientv3.WithRev(st.Revision))
	if err != nil {
		return etcdError(ctx, "read", err)
	}
	st.Apply(state.BatchFromKVs(st.Revision, resp.Kvs))
	return nil
}

// GetNode returns a node with its status.
func (s *Server) GetNode(ctx context.Context, req *sanbootv1.GetRequest) (*sanbootv1.Node, error) {
	ref, err := refOf(req.GetProject(), req.GetName())
	if err != nil {
		return nil, err
	}
	st, err := s.readNode(ctx, ref, "")
	if err != nil {
		return nil, err
	}
	if macs := st.Nodes[ref].Msg.GetSpec().GetMacs(); len(macs) > 0 {
		idx, err := s.readMACs(ctx, macs...)
		if err != nil {
			return nil, err
		}
		st.MACs = idx.MACs
	}
	if agent := st.Placements[ref].Msg.GetAgent(); agent != "" {
		// Did it stop leaving its targets served? Which agents of its
		// storage domain could the node fail over to?
		more, err := s.read(ctx, list(api.AgentsPrefix()))
		if err != nil {
			return nil, err
		}
		st.Agents = more.Agents
	}
	n := view.Node(st, ref)
	if n == nil {
		return nil, notFound("node", ref)
	}
	n.LastBootFetch, err = s.lastBootFetch(ctx, ref, n.GetMetadata().GetUid())
	if err != nil {
		return nil, err
	}
	return n, nil
}

// lastBootFetch reads what the boot server recorded of the last request
// for node ref's script; nil when there is none for the node of this uid.
func (s *Server) lastBootFetch(ctx context.Context, ref state.Ref, uid string) (*sanbootv1.BootFetch, error) {
	f := &sanbootv1.BootFetch{}
	_, err := kv.Get(ctx, s.cli, api.BootFetchKey(ref.Project, ref.Name), f)
	switch {
	case errors.Is(err, kv.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "node %s: %v", ref, err)
	case f.GetNodeUid() != uid:
		return nil, nil // a predecessor's of the same name
	}
	return f, nil
}

// ListNodes returns the nodes a request selects, sorted.
func (s *Server) ListNodes(ctx context.Context, req *sanbootv1.ListRequest) (*sanbootv1.ListNodesResponse, error) {
	f, err := nodeFilter(req.GetProject(), req.GetAllProjects(), req.GetLabelSelector(), nil)
	if err != nil {
		return nil, err
	}
	p, err := newPager(req)
	if err != nil {
		return nil, err
	}
	if resp, ok, err := s.listNodesCached(ctx, f, p, req); ok || err != nil {
		return resp, err
	}
	// A next page whose snapshot this member does not hold: read from
	// etcd at the list's revision.
	if !f.AllProjects && p.size > 0 {
		return s.listNodesPage(ctx, f, p, req.GetSpecOnly())
	}
	scope := f.Project
	if f.AllProjects {
		scope = ""
	}
	at := p.readOpts()
	st, err := s.read(ctx,
		list(api.NodesPrefix(scope), at...),
		list(api.PlacementsPrefix(scope), at...),
		list(api.NodeStatusPrefix(), at...), // keys start with the agent: every project's are read
		listKeys(api.AlivePrefix(), at...),
		list(api.MACsPrefix(), at...),
		list(api.AgentsPrefix(), at...))
	if err != nil {
		return nil, err
	}
	nodes, next, err := page(p, view.Nodes(st, f), func(n *sanbootv1.Node) string { return metaKey(n.GetMetadata()) }, st.Revision, "nodes")
	if err != nil {
		return nil, err
	}
	if req.GetSpecOnly() {
		for _, n := range nodes {
			n.Status = nil
		}
	}
	return &sanbootv1.ListNodesResponse{Nodes: nodes, Revision: p.revision(st.Revision), NextPageToken: next}, nil
}

// nodeFilter checks and turns the selection fields of a request into a filter.
func nodeFilter(project string, all bool, selector string, names []string) (view.NodeFilter, error) {
	f := view.NodeFilter{Project: api.ProjectOrDefault(project), AllProjects: all}
	var errs []error
	if !all {
		errs = append(errs, api.ValidateName("project", f.Project))
	}
	sel, err := api.ParseSelector(selector)
	errs = append(errs, err)
	f.Selector = sel
	if len(names) > 0 {
		f.Names = map[string]bool{}
		for _, n := range names {
			errs = append(errs, api.ValidateName("names", n))
			f.Names[n] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return f, invalid(err)
	}
	return f, nil
}

// PutNode creates or updates a node (see PutMode). Its image must exist in
// its project, and a node's image never changes: its disk was cloned from it.
func (s *Server) PutNode(ctx context.Context, req *sanbootv1.PutNodeRequest) (*sanbootv1.PutNodeResponse, error) {
	if err := checkPutMode(req.GetMode()); err != nil {
		return nil, err
	}
	n := proto.CloneOf(req.GetNode())
	if err := api.ValidateNode(n); err != nil {
		return nil, invalid(err)
	}
	ref := state.Ref{Project: n.Metadata.Project, Name: n.Metadata.Name}
	return s.putNodeRetrying(ctx, ref, n, req.GetMode(), req.GetDryRun(), 0, nil)
}

// errStale is the conflict of a node that is not at the revision the
// request asked for (metadata.revision), or that changed after the
// revision its client read it at (PutNodesRequest.read_revision):
// retryConflict does not redo it.
var errStale = fmt.Errorf("%w: the node is not at the revision asked for", kv.ErrConflict)

// putNodeRetrying is PutNode of a valid node: a write that lost a race is
// redone, unless the node itself is not at the revision asked for
// (metadata.revision, readRev: see errStale). pre, if not nil, is what
// readNode would read (with the node's status), for the first attempt.
func (s *Server) putNodeRetrying(ctx context.Context, ref state.Ref, n *sanbootv1.Node, mode sanbootv1.PutMode, dryRun bool, readRev int64, pre *state.Store) (*sanbootv1.PutNodeResponse, error) {
	return retryConflict(true, describe("node", ref), func() (*sanbootv1.PutNodeResponse, error) {
		resp, err := s.putNode(ctx, ref, n, mode, dryRun, readRev, pre)
		pre = nil // a retry reads again: the next read tells whether the node changed
		return resp, err
	})
}

func (s *Server) putNode(ctx context.Context, ref state.Ref, n *sanbootv1.Node, mode sanbootv1.PutMode, dryRun bool, readRev int64, pre *state.Store) (*sanbootv1.PutNodeResponse, error) {
	st := pre
	// The watch cache is a hint only (the comparisons of the write decide):
	// a node it holds most likely exists, and then a read-only transaction
	// (no raft proposal, no WAL fsync) decides an unchanged node; a
	// transaction holding a put, even one whose comparisons fail, costs a
	// proposal.
	if st == nil && !dryRun && n.Metadata.Revision == 0 && !s.cache.has(ref) {
		resp, read, err := s.createNode(ctx, ref, n)
		if resp != nil || err != nil {
			return resp, err
		}
		st = read
	}
	if st == nil {
		var err error
		if st, err = s.readNode(ctx, ref, n.Spec.Image); err != nil {
			return nil, err
		}
	}
	imgRef := state.Ref{Project: ref.Project, Name: n.Spec.Image}
	img, ok := st.Images[imgRef]
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "spec.image: image %q does not exist in project %q: create the image first", imgRef.Name, imgRef.Project)
	}
	old, exists := st.Nodes[ref]
	if want := n.Metadata.Revision; want != 0 && want != old.ModRevision {
		return nil, errStale
	}
	if readRev != 0 && old.ModRevision > readRev {
		return nil, errStale // created or changed since its client read it
	}

	var rec *sanbootv1.Node
	var result sanbootv1.PutResult
	if !exists {
		rec = &sanbootv1.Node{
			Metadata: newMeta(ref, n.Metadata.Labels),
			Spec:     n.Spec,
		}
		result = sanbootv1.PutResult_PUT_RESULT_CREATED
	} else {
		o := old.Msg
		if o.GetMetadata().GetDeleteTime() != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "%s is being deleted: wait until it is gone, then create it again", describe("node", ref))
		}
		if o.GetSpec().GetImage() != n.Spec.Image {
			return nil, status.Errorf(codes.InvalidArgument, "spec.image: cannot change from %q to %q: the node's disk was cloned from %q; delete the node and create it again (its disk is re-provisioned)",
				o.GetSpec().GetImage(), n.Spec.Image, o.GetSpec().GetImage())
		}
		specSame := proto.Equal(o.GetSpec(), n.Spec)
		labelsSame := maps.Equal(o.GetMetadata().GetLabels(), n.Metadata.Labels)
		switch {
		case mode == sanbootv1.PutMode_PUT_MODE_CREATE && !specSame:
			return nil, status.Errorf(codes.AlreadyExists, "%s already exists with a different spec: apply it (PUT_MODE_APPLY) to change it, or delete it first", describe("node", ref))
		case mode == sanbootv1.PutMode_PUT_MODE_CREATE || (specSame && labelsSame):
			return &sanbootv1.PutNodeResponse{Node: view.Node(st, ref), Result: sanbootv1.PutResult_PUT_RESULT_UNCHANGED}, nil
		}
		rec = proto.CloneOf(o)
		rec.Metadata.Labels = n.Metadata.Labels
		if !specSame {
			rec.Spec = n.Spec
			rec.Metadata.Generation++
		}
		result = sanbootv1.PutResult_PUT_RESULT_CONFIGURED
	}
	rec.Metadata.Revision = 0 // the mod_revision is the revision; never stored
	macCmps, macOps, err := s.claimMACs(ctx, ref, rec.Metadata.GetUid(), rec.Spec.GetMacs(), old.Msg.GetSpec().GetMacs())
	if err != nil {
		return nil, err
	}
	rev := old.ModRevision
	if !dryRun {
		put, err := kv.PutOp(api.NodeKey(ref.Project, ref.Name), rec)
		if err != nil {
			return nil, apiError(err)
		}
		ops, _, err := withSecret(ref, rec.Spec, append([]clientv3.Op{put}, macOps...)...)
		if err != nil {
			return nil, err
		}
		rev, err = s.write(ctx, append([]clientv3.Cmp{
			kv.Unchanged(api.NodeKey(ref.Project, ref.Name), old.ModRevision),
			kv.Unchanged(api.ImageKey(imgRef.Project, imgRef.Name), img.ModRevision),
		}, macCmps...), ops...)
		if err != nil {
			return nil, err
		}
		s.log.Info("node written", "node", ref, "result", result, "generation", rec.Metadata.Generation, "rev", rev)
	}
	st.Nodes[ref] = state.Record[*sanbootv1.Node]{Msg: rec, ModRevision: rev}
	return &sanbootv1.PutNodeResponse{Node: view.Node(st, ref), Result: result}, nil
}

// createNode is the common case in one round trip: the node does not exist
// and its image does, so write it. When that is not the case it returns
// what readNode would have read, in the same transaction, and the caller
// takes the general path (compare, write): an unchanged node costs one
// round trip and no write. DeleteImage compares the nodes prefix, so an
// image cannot go away under a node created here.
func (s *Server) createNode(ctx context.Context, ref state.Ref, n *sanbootv1.Node) (*sanbootv1.PutNodeResponse, *state.Store, error) {
	c, err := newNodeCreate(ref, n)
	if err != nil {
		return nil, nil, err
	}
	s.placeNew([]*nodeCreate{c})
	resp, err := s.commit(ctx, c.cmps, c.ops, nodeReads(ref, n.Spec.Image))
	if err != nil {
		return nil, nil, etcdError(ctx, "write", err)
	}
	if !resp.Succeeded {
		read := s.readStore(resp.Header.Revision, resp.Responses)
		// Its status key names the placed agent, which this read told.
		return nil, read, s.readStatus(ctx, read, ref)
	}
	return s.created(s.createdStore(), c, resp.Header.Revision, resp.Responses), nil, nil
}

// nodeCreate is the transaction that creates one node: its comparisons
// (the node is absent, its image present) and writes. createNode and
// PutNodes both build it here, and place the node in it when the choice
// is forced (placeNew).
type nodeCreate struct {
	ref    state.Ref
	rec    *sanbootv1.Node
	secret *sanbootv1.ChapSecret // the CHAP credentials ops create, or nil
	cmps   []clientv3.Cmp
	ops    []clientv3.Op
	// place is set when ops end with the nested transaction that places
	// the node (placeNew).
	place *placeAtCreate
}

func newNodeCreate(ref state.Ref, n *sanbootv1.Node) (*nodeCreate, error) {
	rec := &sanbootv1.Node{
		Metadata: newMeta(ref, n.Metadata.Labels),
		Spec:     n.Spec,
	}
	key := api.NodeKey(ref.Project, ref.Name)
	put, err := kv.PutOp(key, rec)
	if err != nil {
		return nil, apiError(err)
	}
	macCmps, macOps, err := claimMACsFresh(ref, rec.Metadata.GetUid(), n.Spec.GetMacs())
	if err != nil {
		return nil, err
	}
	ops, secret, err := withSecret(ref, n.Spec, append([]clientv3.Op{put}, macOps...)...)
	if err != nil {
		return nil, err
	}
	return &nodeCreate{ref: ref, rec: rec, secret: secret, ops: ops, cmps: append([]clientv3.Cmp{
		kv.Unchanged(key, 0),
		clientv3.Compare(clientv3.Version(api.ImageKey(ref.Project, n.Spec.Image)), ">", 0),
	}, macCmps...)}, nil
}

// created is the answer to a node that c created at rev; responses are
// the create's (its Then branch), which tell whether it placed the node.
// st (createdStore) holds what the answer shows; the creates of one
// transaction share it.
func (s *Server) created(st *state.Store, c *nodeCreate, rev int64, responses []*etcdserverpb.ResponseOp) *sanbootv1.PutNodeResponse {
	st.Nodes[c.ref] = state.Record[*sanbootv1.Node]{Msg: c.rec, ModRevision: rev}
	if c.place.done(responses) {
		s.log.Debug("node created and placed", "node", c.ref, "agent", c.place.agent, "rev", rev)
		st.Placements[c.ref] = state.Record[*sanbootv1.Placement]{Msg: c.place.rec, ModRevision: rev}
		st.Alive[c.place.agent] = c.place.aliveRev
	} else {
		s.log.Debug("node created", "node", c.ref, "rev", rev)
	}
	return &sanbootv1.PutNodeResponse{Node: view.Node(st, c.ref), Result: sanbootv1.PutResult_PUT_RESULT_CREATED}
}

// createdStore is the store the answers of created nodes are made from.
func (s *Server) createdStore() *state.Store {
	return state.New(s.log, state.Nodes, state.Placements, state.Alive)
}

// DeleteNode marks a node deleting; the scheduler and its agent do the
// rest. Deleting a node that is being deleted again changes nothing.
func (s *Server) DeleteNode(ctx context.Context, req *sanbootv1.DeleteRequest) (*sanbootv1.Node, error) {
	if err := checkDeleteRevision(req.GetRevision()); err != nil {
		return nil, err
	}
	ref, err := refOf(req.GetProject(), req.GetName())
	if err != nil {
		return nil, err
	}
	return retryConflict(req.GetRevision() == 0, describe("node", ref), func() (*sanbootv1.Node, error) {
		return s.deleteNode(ctx, ref, req)
	})
}

func (s *Server) deleteNode(ctx context.Context, ref state.Ref, req *sanbootv1.DeleteRequest) (*sanbootv1.Node, error) {
	st, err := s.readNode(ctx, ref, "")
	if err != nil {
		return nil, err
	}
	old, ok := st.Nodes[ref]
	if !ok {
		return nil, notFound("node", ref)
	}
	if want := req.GetRevision(); want != 0 && want != old.ModRevision {
		return nil, kv.ErrConflict
	}
	if old.Msg.GetMetadata().GetDeleteTime() != nil {
		if !req.GetForce() || old.Msg.GetMetadata().GetForceDelete() {
			return view.Node(st, ref), nil
		}
		// Already deleting, now forced: the agent may never come back.
		rec := proto.CloneOf(old.Msg)
		rec.Metadata.ForceDelete = true
		rev, err := kv.CAS(ctx, s.cli, api.NodeKey(ref.Project, ref.Name), old.ModRevision, rec)
		if errors.Is(err, kv.ErrConflict) {
			return nil, err
		}
		if err != nil {
			return nil, etcdError(ctx, "write", err)
		}
		s.log.Info("node deletion forced", "node", ref, "rev", rev)
		st.Nodes[ref] = state.Record[*sanbootv1.Node]{Msg: rec, ModRevision: rev}
		return view.Node(st, ref), nil
	}
	rec := proto.CloneOf(old.Msg)
	if rec.Metadata == nil {
		rec.Metadata = &sanbootv1.ObjectMeta{Project: ref.Project, Name: ref.Name}
	}
	now := time.Now()
	rec.Metadata.DeleteTime = timestamppb.New(now)
	rec.Metadata.ForceDelete = req.GetForce()
	if req.GetKeepDisk() && !rec.GetSpec().GetKeepDisk() {
		if rec.Spec == nil {
			rec.Spec = &sanbootv1.NodeSpec{}
		}
		rec.Spec.KeepDisk = true // a spec change: the agent must learn it
		rec.Metadata.Generation++
	}
	key := api.NodeKey(ref.Project, ref.Name)
	put, err := kv.PutOp(key, rec)
	if err != nil {
		return nil, apiError(err)
	}
	cmps := []clientv3.Cmp{kv.Unchanged(key, old.ModRevision)}
	ops := []clientv3.Op{put}
	// A deleting node boots no more: its MACs are free for another node.
	if macs := rec.GetSpec().GetMacs(); len(macs) > 0 {
		idx, err := s.readMACs(ctx, macs...)
		if err != nil {
			return nil, err
		}
		release, rcmps := releaseMACs(idx, ref, macs)
		cmps, ops = append(cmps, rcmps...), append(ops, release...)
	}
	kept := ""
	if rec.GetSpec().GetKeepDisk() {
		img, guards, err := s.keptDiskImage(ctx, ref, rec, st.Placements[ref].Msg.GetAgent(), now)
		if err != nil {
			return nil, err
		}
		if img != nil {
			kept = img.Metadata.Name
			iput, err := kv.PutOp(api.ImageKey(ref.Project, kept), img)
			if err != nil {
				return nil, apiError(err)
			}
			cmps, ops = append(cmps, guards...), append(ops, iput)
		}
	}
	rev, err := s.write(ctx, cmps, ops...)
	if err != nil {
		return nil, err // kv.ErrConflict or a status
	}
	if kept != "" {
		s.log.Info("node deletion requested; its disk becomes an image", "node", ref, "image", kept, "rev", rev)
		s.events.mu.Lock()
		s.events.add(ref, event("Normal", "DiskKept", "%s%s: the agent snapshots the disk, then deletes it", KeptDiskPrefix, kept))
		s.events.mu.Unlock()
		st.Nodes[ref] = state.Record[*sanbootv1.Node]{Msg: rec, ModRevision: rev}
		n := view.Node(st, ref)
		if n.Status == nil {
			n.Status = &sanbootv1.NodeStatus{}
		}
		n.Status.Message = KeptDiskPrefix + kept + "; " + n.Status.Message
		return n, nil
	}
	s.log.Info("node deletion requested", "node", ref, "rev", rev)
	st.Nodes[ref] = state.Record[*sanbootv1.Node]{Msg: rec, ModRevision: rev}
	return view.Node(st, ref), nil
}

// KeptDiskPrefix starts the status message DeleteNode returns when it
// turned the node's disk into an image; the image's name follows it, up
// to "; " or the end.
const KeptDiskPrefix = "disk kept as image/"

// KeptDiskName is the image a node's disk is kept as: NODE-disk-<UTC
// time>, the node's name shortened so that the whole is a DNS label.
func KeptDiskName(node string, now time.Time) string {
	suffix := "-disk-" + now.UTC().Format("20060102-150405")
	if max := 63 - len(suffix); len(node) > max {
		node = strings.TrimRight(node[:max], "-")
	}
	return node + suffix
}

// keptDiskImage is the snapshot image that keeps the disk of node rec,
// placed on agent, when it is deleted with keep_disk, and the comparisons
// its write needs (the name is free, the parent image unchanged). It is
// nil when the node was never placed: it has no disk.
func (s *Server) keptDiskImage(ctx context.Context, ref state.Ref, rec *sanbootv1.Node, agent string, now time.Time) (*sanbootv1.Image, []clientv3.Cmp, error) {
	if agent == "" {
		return nil, nil, nil
	}
	parent := rec.GetSpec().GetImage()
	pref := state.Ref{Project: ref.Project, Name: parent}
	st, err := s.read(ctx, get(api.ImageKey(pref.Project, pref.Name)))
	if err != nil {
		return nil, nil, err
	}
	p, ok := st.Images[pref]
	if !ok { // PutNode and DeleteImage never let this happen
		return nil, nil, status.Errorf(codes.FailedPrecondition, "the image %q of %s does not exist, so its disk cannot be kept as an image: "+
			"delete the node without keep_disk", parent, describe("node", ref))
	}
	name := KeptDiskName(ref.Name, now)
	img := &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{
			Project: ref.Project, Name: name, Generation: 1, CreateTime: timestamppb.New(now), Uid: newUID(),
		},
		Spec: &sanbootv1.ImageSpec{
			SizeBytes:   p.Msg.GetSpec().GetSizeBytes(),
			Source:      &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: ref.Name}}},
			Agents:      []string{agent},
			Parent:      parent,
			EfiBootPath: p.Msg.GetSpec().GetEfiBootPath(),
			Description: "disk of node " + ref.Name + ", kept when the node was deleted",
		},
	}
	return img, []clientv3.Cmp{
		kv.Unchanged(api.ImageKey(ref.Project, name), 0),
		kv.Unchanged(api.ImageKey(pref.Project, pref.Name), p.ModRevision),
	}, nil
}
