package reconciler

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// Images made on this agent from what it already holds: a snapshot (the
// disk of a node placed here, fsynced and reflinked; the API server names
// only the node's agent in spec.agents) and a copy (this agent's own
// replica of another image, reflinked). Neither can be fetched from
// elsewhere, so when the source is not here the replica says why and the
// image's work waits for the source's work (see after) instead of failing
// blindly. Once made, the image is a file of its own: deleting the node or
// the source image later does not touch it.

// awaitSource checks that the source of a snapshot or copy image k is in
// this agent's store. When it is not, it returns the replica's phase and
// message and how the work goes on; phase is "" when the import can go
// ahead (or the image is already here, or it has another kind of source).
func (r *Reconciler) awaitSource(ctx context.Context, k ref, spec store.ImageSpec) (phase, msg string, out outcome, err error) {
	if spec.Source.Kind != store.SourceSnapshot && spec.Source.Kind != store.SourceCopy {
		return "", "", done, nil
	}
	if _, err := r.cfg.Store.StatImage(ctx, k.project, k.name); err == nil {
		return "", "", done, nil // made before; EnsureImage checks it is the same
	}
	if spec.Source.Kind == store.SourceSnapshot {
		return r.awaitDisk(ctx, k, spec.Source.Node)
	}
	return r.awaitImage(ctx, k, spec.Source.Image)
}

// awaitDisk: a snapshot needs the node's disk in this store.
func (r *Reconciler) awaitDisk(ctx context.Context, k ref, node string) (phase, msg string, out outcome, err error) {
	nk := ref{k.project, node}
	// Registered before looking, so that a node's work that ends in between
	// still queues the snapshot again.
	r.after(key{kindNode, nk}, key{kindImage, k})
	_, err = r.cfg.Store.StatDisk(ctx, k.project, node)
	switch {
	case err == nil:
		return "", "", done, nil
	case !errors.Is(err, store.ErrNotFound):
		return api.ReplicaFailed, fmt.Sprintf("cannot read the disk of node %q to snapshot it: %v; check the store directory on this agent; "+
			"the agent retries", node, err), retry, err
	}
	r.mu.Lock()
	a, assigned := r.assigns[nk]
	listed := r.listed[0]
	r.mu.Unlock()
	if !listed { // just started: the node's assignment may not be mirrored yet
		return api.ReplicaPending, fmt.Sprintf("waiting for this agent's assignments to be listed before snapshotting node %q", node), retry,
			errors.New("assignments not listed yet")
	}
	if assigned && a.err == nil && !a.a.GetDeleting() {
		return api.ReplicaPending, fmt.Sprintf("waiting for the disk of node %q to be cloned on this agent before snapshotting it", node), settled, nil
	}
	err = fmt.Errorf("snapshot of node %s/%s: the disk: %w", k.project, node, store.ErrNotFound)
	return api.ReplicaFailed, fmt.Sprintf("node %q has no disk on agent %q: it was deleted before the snapshot was taken, or lives on another agent; "+
		"delete this image and snapshot the node again; the agent retries", node, r.cfg.Agent), retry, err
}

// awaitImage: a copy needs this agent's own replica of the source image.
func (r *Reconciler) awaitImage(ctx context.Context, k ref, src string) (phase, msg string, out outcome, err error) {
	sk := ref{k.project, src}
	r.after(key{kindImage, sk}, key{kindImage, k})
	_, err = r.cfg.Store.StatImage(ctx, k.project, src)
	switch {
	case err == nil:
		return "", "", done, nil
	case !errors.Is(err, store.ErrNotFound):
		return api.ReplicaFailed, fmt.Sprintf("cannot read source image %q in this agent's store: %v; the agent retries", src, err), retry, err
	}
	r.mu.Lock()
	st, known := r.images[sk]
	srcErr := r.imageErr[sk]
	r.mu.Unlock()
	err = fmt.Errorf("copy of image %s/%s: %w", k.project, src, store.ErrNotFound)
	switch {
	case !known:
		return api.ReplicaFailed, fmt.Sprintf("source image %q does not exist in project %q (it was deleted before this agent copied it): "+
			"delete this image, or create %q again", src, k.project, src), settled, err
	case st.err != nil:
		return api.ReplicaFailed, fmt.Sprintf("the record of source image %q cannot be decoded (%v): upgrade the agent", src, st.err), settled, err
	case !r.wants(st.im):
		return api.ReplicaFailed, fmt.Sprintf("source image %q is not replicated to agent %q (its spec.agents is %v), and a copy is made from "+
			"this agent's own replica: add this agent to the agents of %q, or copy it to its agents only", src, r.cfg.Agent,
			st.im.GetSpec().GetAgents(), src), settled, err
	case srcErr != "":
		return api.ReplicaFailed, fmt.Sprintf("source image %q could not be imported on this agent: %s", src, srcErr), settled, err
	}
	return api.ReplicaPending, fmt.Sprintf("waiting for source image %q to be imported into this agent's store before copying it", src), settled, nil
}

// after queues k again once dep's work has succeeded (outcome done). Only
// success wakes: two images that wait for each other then rest instead of
// waking each other forever; the periodic resync looks at them again.
func (r *Reconciler) after(dep, k key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deps[dep] == nil {
		r.deps[dep] = map[key]bool{}
	}
	r.deps[dep][k] = true
}

// wakeAfter queues the work that waited for k's.
func (r *Reconciler) wakeAfter(k key) {
	r.mu.Lock()
	waiting := r.deps[k]
	delete(r.deps, k)
	r.mu.Unlock()
	for w := range waiting {
		r.q.Forget(w)
		r.q.Add(w)
	}
}

// takeSnapshots makes every snapshot of node k that this agent should make
// and has not made yet, before the node's disk is deleted: a snapshot
// asked for before the node's deletion is never lost to it. It reads the
// project's images from etcd rather than from the mirror, which may lag
// behind the assignment that asked for the deletion. It returns how many
// snapshots of the node this agent holds (taken now or before).
func (r *Reconciler) takeSnapshots(ctx context.Context, k ref) (int, error) {
	resp, err := r.cfg.Client.Get(ctx, api.ImagesPrefix(k.project), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list the images of project %q to find snapshots of the node: %w", k.project, err)
	}
	held := 0
	for _, kv := range resp.Kvs {
		project, name, err := api.ProjectName(string(kv.Key))
		if err != nil {
			continue
		}
		im := &sanbootv1.Image{}
		if err := proto.Unmarshal(kv.Value, im); err != nil {
			// It may be a snapshot of this node: keep the disk until it
			// can be read.
			return held, fmt.Errorf("image record %s/%s cannot be decoded (%v), so it is not known whether it is a snapshot of the node: "+
				"the disk is kept until it can be read (upgrade the agent, or fix the record)", project, name, err)
		}
		if im.GetSpec().GetSource().GetSnapshot().GetNode() != k.name || !r.wants(im) {
			continue
		}
		ik := ref{project, name}
		spec, err := storeSpec(ik, im)
		if err != nil {
			return held, fmt.Errorf("snapshot %q of the node has an invalid spec (%v): the disk is kept until it is fixed or deleted", name, err)
		}
		if old, err := r.cfg.Store.StatImage(ctx, project, name); err == nil {
			if store.SameSource(old.Source, spec.Source) {
				held++
				continue
			}
			// A file of that name from an earlier image record: this
			// snapshot is not taken yet. Replace the stale file.
			if err := r.cfg.Store.DeleteImage(ctx, project, name); err != nil {
				return held, fmt.Errorf("replace the stale image %q before snapshotting the node: %w", name, err)
			}
		}
		if _, err := r.cfg.Store.EnsureImage(ctx, spec); err != nil {
			return held, fmt.Errorf("snapshot %q of the node could not be taken: %w", name, err)
		}
		r.log.Info("took a snapshot before deleting the node's disk", "project", project, "node", k.name, "image", name)
		r.q.Add(key{kindImage, ik}) // report its replica
		held++
	}
	return held, nil
}
