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

// syncImage makes the store hold an image this agent should replicate, and
// report it in its ImageReplica; or removes the copy and the replica of an
// image it should not hold (spec deleted, being deleted, or for other
// agents). Disks cloned from a removed image are not affected.
func (r *Reconciler) syncImage(ctx context.Context, k ref) (outcome, error) {
	r.mu.Lock()
	st, ok := r.images[k]
	r.mu.Unlock()
	defer r.wakeWaiters(k)

	if ok && st.err == nil && st.im.GetMetadata().GetDeleteTime() == nil && !r.wants(st.im) && r.cfg.SharedStore {
		// Another agent of the storage domain holds it, in the same
		// store: drop only this agent's replica record.
		r.w.submit(item{key: api.ReplicaKey(k.project, k.name, r.cfg.Agent), del: true, guardKey: api.ImageKey(k.project, k.name), guardRev: st.rev})
		return done, nil
	}
	if !ok || (st.err == nil && (st.im.GetMetadata().GetDeleteTime() != nil || !r.wants(st.im))) {
		guard := int64(0) // the spec is absent
		if ok {
			guard = st.rev
		} else if err := r.confirmImageGone(ctx, k); err != nil {
			// Not seen is not deleted: the images prefix may not be listed
			// yet, or the watch lags (a snapshot just made for a node
			// being torn down). Deleting now could lose the only copy.
			return retry, err
		}
		if err := r.cfg.Store.DeleteImage(ctx, k.project, k.name); err != nil {
			if isInvalid(err) {
				return settled, err // a name that was never a path
			}
			return retry, fmt.Errorf("remove image %s/%s from the store: %w", k.project, k.name, err)
		}
		r.mu.Lock()
		delete(r.imageErr, k)
		delete(r.imageOK, k)
		r.mu.Unlock()
		r.w.submit(item{key: api.ReplicaKey(k.project, k.name, r.cfg.Agent), del: true, guardKey: api.ImageKey(k.project, k.name), guardRev: guard})
		return done, nil
	}

	gen := st.im.GetMetadata().GetGeneration()
	rep := &sanbootv1.ImageReplica{Agent: r.cfg.Agent, ObservedGeneration: gen}
	submit := func(phase, msg string) {
		rep := proto.CloneOf(rep)
		rep.Phase, rep.Message = phase, msg
		r.mu.Lock()
		if phase == api.ReplicaReady {
			r.imageOK[k] = gen
		} else {
			delete(r.imageOK, k)
		}
		r.mu.Unlock()
		r.w.submit(replicaItem(r.cfg.Agent, k.project, k.name, st.rev, rep))
	}
	fail := func(out outcome, err error, msg string) (outcome, error) {
		if ctx.Err() != nil { // stopping: not the image's fault
			return retry, err
		}
		r.mu.Lock()
		r.imageErr[k] = msg
		r.mu.Unlock()
		submit(api.ReplicaFailed, msg)
		return out, err
	}
	if st.err != nil {
		return fail(settled, st.err, fmt.Sprintf("the image record cannot be decoded (%v): upgrade the agent", st.err))
	}
	spec, err := storeSpec(k, st.im)
	if err != nil {
		return fail(settled, err, fmt.Sprintf("the image spec is invalid: %s; fix it through the API", oneLine(err)))
	}
	if phase, msg, out, err := r.awaitSource(ctx, k, spec); phase == api.ReplicaFailed {
		return fail(out, err, msg)
	} else if phase != "" {
		r.mu.Lock()
		delete(r.imageErr, k)
		r.mu.Unlock()
		submit(phase, msg)
		return out, err
	}
	progress := func(msg string) { submit(api.ReplicaPending, msg) }
	r.mu.Lock()
	if g, ok := r.imageOK[k]; ok && g == gen {
		// A pass over an image Ready at this generation (a resync)
		// checks it: a slow store call must not make it Pending.
		progress = nil
	}
	r.mu.Unlock()
	p := startProgress(r.cfg.ProgressAfter, "importing", progress)
	im, err := r.cfg.Store.EnsureImage(ctx, spec)
	if errors.Is(err, store.ErrMismatch) && r.staleCopy(ctx, spec) {
		// The image was deleted and created again under its name (the
		// queue merged the two): the stored file is the old image's.
		r.log.Info("replacing the stored copy of an image that was deleted and created again", "image", k.project+"/"+k.name)
		if err = r.cfg.Store.DeleteImage(ctx, k.project, k.name); err == nil {
			im, err = r.cfg.Store.EnsureImage(ctx, spec)
		}
	}
	p.finish(nil)
	switch {
	case err == nil:
	case isInvalid(err):
		return fail(settled, err, fmt.Sprintf("the image spec is invalid: %s; fix it through the API", oneLine(err)))
	case errors.Is(err, store.ErrMismatch):
		return fail(settled, err, fmt.Sprintf("%v: this agent holds another image of that name; images do not change: "+
			"create a new image instead", err))
	case errors.Is(err, store.ErrNoSpace):
		return fail(retry, err, fmt.Sprintf("%v; the agent retries", err))
	default:
		return fail(retry, err, fmt.Sprintf("import failed: %v; the agent retries", err))
	}
	r.mu.Lock()
	delete(r.imageErr, k)
	r.mu.Unlock()
	rep.SizeBytes, rep.Sha256 = im.SizeBytes, im.SHA256
	rep.CloneDepth, rep.Flattening = int32(min(im.CloneDepth, 1<<20)), im.Flattening
	msg := ""
	if im.Flattening {
		msg = fmt.Sprintf("it reads through %d other images: flattening it in the background (copying their data into it); "+
			"it serves meanwhile", im.CloneDepth)
	}
	submit(api.ReplicaReady, msg)
	return done, nil
}

// storeSpec converts an image record into what the store imports.
func storeSpec(k ref, im *sanbootv1.Image) (store.ImageSpec, error) {
	s := im.GetSpec()
	if s == nil {
		return store.ImageSpec{}, &api.FieldError{Field: "spec", Msg: "is missing: it gives the size and source"}
	}
	spec := store.ImageSpec{Project: k.project, Name: k.name, SizeBytes: s.GetSizeBytes()}
	switch src := s.GetSource().GetKind().(type) {
	case nil, *sanbootv1.ImageSource_Blank:
		spec.Source = store.Source{Kind: store.SourceBlank}
	case *sanbootv1.ImageSource_Upload:
		spec.Source = store.Source{Kind: store.SourceUpload, UploadID: src.Upload.GetUploadId(), SHA256: src.Upload.GetSha256(),
			Member: src.Upload.GetMember()}
	case *sanbootv1.ImageSource_Url:
		spec.Source = store.Source{Kind: store.SourceURL, URL: src.Url.GetUrl(), SHA256: src.Url.GetSha256()}
	case *sanbootv1.ImageSource_Snapshot:
		spec.Source = store.Source{Kind: store.SourceSnapshot, Node: src.Snapshot.GetNode()}
	case *sanbootv1.ImageSource_Copy:
		spec.Source = store.Source{Kind: store.SourceCopy, Image: src.Copy.GetImage()}
	}
	spec.Source.UID = im.GetMetadata().GetUid()
	return spec, store.ValidateImageSpec(spec)
}

// confirmImageGone returns nil only when the image's spec is known to be
// absent: the images prefix has been listed and etcd itself has no record.
func (r *Reconciler) confirmImageGone(ctx context.Context, k ref) error {
	r.mu.Lock()
	listed := r.listed[1]
	r.mu.Unlock()
	if !listed {
		return fmt.Errorf("image %s/%s: the images are not listed yet; not removing it before they are", k.project, k.name)
	}
	resp, err := r.cfg.Client.Get(ctx, api.ImageKey(k.project, k.name), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("check that image %s/%s is gone before removing it: %w", k.project, k.name, err)
	}
	if resp.Count != 0 {
		return fmt.Errorf("image %s/%s exists in etcd but not yet in this agent's mirror; waiting for the watch", k.project, k.name)
	}
	return nil
}

// staleCopy reports whether the store holds an image of spec's name that
// belongs to an earlier image record (another UID).
func (r *Reconciler) staleCopy(ctx context.Context, spec store.ImageSpec) bool {
	old, err := r.cfg.Store.StatImage(ctx, spec.Project, spec.Name)
	return err == nil && old.Source.UID != "" && spec.Source.UID != "" && old.Source.UID != spec.Source.UID
}
