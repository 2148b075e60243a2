package reconciler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// nodeWork is one pass over one node: the assignment it acts on and the
// way it reports.
type nodeWork struct {
	ctx context.Context
	r   *Reconciler
	k   ref
	rev int64
	gen int64
	p   *progress
}

func (w *nodeWork) status(phase, msg string) *sanbootv1.NodeStatus {
	return &sanbootv1.NodeStatus{Phase: phase, Message: msg, Agent: w.r.cfg.Agent, ObservedGeneration: w.gen}
}

func (w *nodeWork) submit(st *sanbootv1.NodeStatus) {
	w.r.w.submit(statusItem(w.r.cfg.Agent, w.k.project, w.k.name, w.rev, st))
}

// final writes st as the outcome of this pass.
func (w *nodeWork) final(st *sanbootv1.NodeStatus) {
	w.p.finish(func() { w.r.finalStatus(w.k, st, func() { w.submit(st) }) })
}

// failed writes a Failed status and returns how to go on. When the agent
// is stopping, the failure is the stop's doing and is not reported.
func (w *nodeWork) failed(out outcome, err error, msg string) (outcome, error) {
	if w.ctx.Err() != nil {
		w.p.finish(nil)
		return retry, err
	}
	w.final(w.status(api.PhaseFailed, msg))
	return out, err
}

// syncNode converges one node: image present, disk cloned, target served,
// status written; or, for a deleting assignment, target and disk gone.
func (r *Reconciler) syncNode(ctx context.Context, k ref) (outcome, error) {
	r.mu.Lock()
	st, ok := r.assigns[k]
	r.mu.Unlock()
	if !ok {
		// The scheduler removed the assignment (and the status with it);
		// the target GC removes what is left.
		return done, nil
	}
	w := &nodeWork{ctx: ctx, r: r, k: k, rev: st.rev}
	if st.err != nil {
		w.p = startProgress(r.cfg.ProgressAfter, "", nil)
		return w.failed(settled, st.err, fmt.Sprintf("the assignment record cannot be decoded (%v): the control plane "+
			"and this agent may run incompatible versions; upgrade the agent", st.err))
	}
	a := st.a
	w.gen = a.GetGeneration()
	if a.GetDeleting() {
		w.p = startProgress(r.cfg.ProgressAfter, "removing the target", func(msg string) { w.submit(w.status(api.PhaseDeleting, msg)) })
		return r.teardown(ctx, w, a)
	}
	progress := func(msg string) { w.submit(w.status(api.PhaseProvisioning, msg)) }
	if r.servedAt(k, w.gen) {
		// A pass over a node Ready at this generation (a resync, its
		// sessions changed) checks what is served: a slow store call
		// must not make it say Provisioning, without portals, meanwhile.
		progress = nil
	}
	w.p = startProgress(r.cfg.ProgressAfter, "preparing the disk", progress)
	want, image, err := r.desired(k, a)
	if err != nil {
		return w.failed(settled, err, fmt.Sprintf("the assignment is invalid, so nothing was created: %s. "+
			"Fix the node's spec through the API; the agent tries again when the assignment changes", oneLine(err)))
	}

	disk, err := r.cfg.Store.StatDisk(ctx, k.project, k.name)
	if errors.Is(err, store.ErrNotFound) {
		if _, err := r.cfg.Store.StatImage(ctx, k.project, image); errors.Is(err, store.ErrNotFound) {
			phase, msg := r.imageProblem(k, image)
			w.final(w.status(phase, msg))
			return settled, nil
		} else if err != nil {
			return w.failed(retry, err, fmt.Sprintf("cannot read image %q in this agent's store: %v; the agent retries", image, err))
		}
		msg := fmt.Sprintf("cloning image %q into the node's disk", image)
		if r.cfg.Store.CloneMode() == store.CloneCopy {
			w.p.now(msg + " (a full copy: this file system has no reflink)")
		} else {
			w.p.step(msg)
		}
		disk, err = r.cfg.Store.Clone(ctx, k.project, image, k.name, a.GetUid())
		switch {
		case errors.Is(err, store.ErrNoSpace):
			return w.failed(retry, err, fmt.Sprintf("cannot clone the disk: %v; the agent retries", err))
		case errors.Is(err, store.ErrNotFound):
			return w.failed(retry, err, fmt.Sprintf("image %q vanished from this agent's store while cloning; the agent retries", image))
		case err != nil:
			return w.failed(retry, err, fmt.Sprintf("cannot clone image %q: %v; check the store directory on this agent; the agent retries", image, err))
		}
	} else if err != nil {
		return w.failed(retry, err, fmt.Sprintf("cannot read the node's disk: %v; check the store directory on this agent; the agent retries", err))
	}

	if foreignDisk(disk, a) {
		return w.failed(settled, errForeignDisk, fmt.Sprintf("this agent holds a disk for %s made for an earlier node of that name "+
			"(uid %s, cloned from %q), not for this one: it is left alone and not served. Snapshot or remove it on the agent (%s); "+
			"the agent tries again when the node changes or at the next resync", k, disk.Owner, disk.Image, disk.Path))
	}
	want.BackingPath, want.SizeBytes = disk.Path, disk.SizeBytes
	if r.fenced.Load() {
		w.p.finish(nil) // nothing to report: etcd is out of reach or the lease is gone
		return retry, errFenced
	}
	w.p.step("building the iSCSI target")
	sessions, err := r.ensure(ctx, want)
	if err != nil {
		if isInvalid(err) {
			return w.failed(settled, err, fmt.Sprintf("the target cannot be built from this assignment: %s. "+
				"Fix the node's spec through the API", oneLine(err)))
		}
		if down := r.targetDown(); down != "" && w.ctx.Err() == nil {
			w.final(w.status(api.PhaseUnavailable, down))
			return retry, err
		}
		return w.failed(retry, err, fmt.Sprintf("the %s driver could not build target %s: %v; check the target service "+
			"on this agent; the agent retries", r.cfg.Driver.Name(), want.IQN, err))
	}
	ready := w.status(api.PhaseReady, fmt.Sprintf("target %s serves the disk to %s", want.IQN, want.Initiators[0]))
	ready.TargetIqn = want.IQN
	ready.Portals = slices.Clone(r.advertise)
	ready.Lun = int32(r.cfg.Driver.LUN())
	ready.CloneMode = string(disk.CloneMode)
	if warn := r.storeWarning(); warn != "" {
		ready.Message += "; " + warn
	}
	ready.Sessions = sessions
	w.final(ready)
	return done, nil
}

// ensure builds target t and returns who is logged in to it, for the
// node's status: as the driver's Ensure found it when the driver says
// (target.SessionReporter: tgt reads no listing for it), else from a
// Sessions call after Ensure.
func (r *Reconciler) ensure(ctx context.Context, t target.Target) ([]*sanbootv1.TargetSession, error) {
	if d, ok := r.cfg.Driver.(target.SessionReporter); ok {
		got, err := d.EnsureSessions(ctx, t)
		if err != nil {
			return nil, err
		}
		return r.statusSessions(t.IQN, got), nil
	}
	if err := r.cfg.Driver.Ensure(ctx, t); err != nil {
		return nil, err
	}
	return r.sessions(ctx, t.IQN), nil
}

// sessions returns who is logged in to target iqn for a node's status (see
// statusSessions). When the driver cannot say, it logs why and returns
// none: the status goes on saying what was built.
func (r *Reconciler) sessions(ctx context.Context, iqn string) []*sanbootv1.TargetSession {
	got, err := r.cfg.Driver.Sessions(ctx, iqn)
	if err != nil {
		r.log.Warn("cannot read the target's sessions; the node's status lists none", "iqn", iqn, "err", err)
		return nil
	}
	return r.statusSessions(iqn, got)
}

// statusSessions turns the sessions on target iqn into a node status's: at
// most api.MaxNodeSessions, sorted.
func (r *Reconciler) statusSessions(iqn string, got []target.Session) []*sanbootv1.TargetSession {
	if len(got) > api.MaxNodeSessions {
		r.log.Warn("more initiators are logged in than a node's status lists", "iqn", iqn, "sessions", len(got), "listed", api.MaxNodeSessions)
		got = got[:api.MaxNodeSessions]
	}
	out := make([]*sanbootv1.TargetSession, len(got))
	for i, s := range got {
		out[i] = &sanbootv1.TargetSession{Initiator: s.Initiator, Address: s.Address}
	}
	return out
}

// servedAt reports whether node k's last status said Ready at spec
// generation gen.
func (r *Reconciler) servedAt(k ref, gen int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.served[k]
	return ok && s.gen == gen
}

// sessionsKey is a comparable form of a status's sessions.
func sessionsKey(ss []*sanbootv1.TargetSession) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(s.GetInitiator() + " " + s.GetAddress() + "\n")
	}
	return b.String()
}

// sessionsChanged reports whether the sessions on the target iqn of a
// Ready node differ from those its status lists (resync queues it then,
// and its pass writes the new list). read says who is logged in to a
// target (sessionReader).
func (r *Reconciler) sessionsChanged(k ref, iqn string, read func(iqn string) []*sanbootv1.TargetSession) bool {
	r.mu.Lock()
	s, ok := r.served[k]
	r.mu.Unlock()
	if !ok || s.iqn != iqn {
		return false // not Ready: its next pass lists them
	}
	return sessionsKey(read(iqn)) != s.sessions
}

// sessionReader returns what a resync asks who is logged in to a target:
// a driver that is a target.SessionReporter lists every target's sessions
// once, at the first question; another is asked per target.
func (r *Reconciler) sessionReader(ctx context.Context) func(iqn string) []*sanbootv1.TargetSession {
	d, ok := r.cfg.Driver.(target.SessionReporter)
	if !ok {
		return func(iqn string) []*sanbootv1.TargetSession { return r.sessions(ctx, iqn) }
	}
	var all map[string][]target.Session
	read := false
	return func(iqn string) []*sanbootv1.TargetSession {
		if !read {
			read = true
			var err error
			if all, err = d.ListSessions(ctx); err != nil {
				// As a failed Sessions call: none, so that the nodes
				// whose statuses list some are passed over again.
				r.log.Warn("cannot read the targets' sessions; taking them for none", "err", err)
			}
		}
		return r.statusSessions(iqn, all[iqn])
	}
}

// teardown removes a deleting node's target and disk and says Deleted.
func (r *Reconciler) teardown(ctx context.Context, w *nodeWork, a *sanbootv1.Assignment) (outcome, error) {
	k := w.k
	iqn := targetIQN(k, a)
	if err := api.ValidateIQN("assignment.targetIqn", iqn); err == nil {
		if err := r.cfg.Driver.Delete(ctx, iqn); err != nil {
			return w.failed(retry, err, fmt.Sprintf("deleting: the %s driver could not remove target %s: %v; the agent retries",
				r.cfg.Driver.Name(), iqn, err))
		}
	}
	if d, err := r.cfg.Store.StatDisk(ctx, k.project, k.name); err == nil && foreignDisk(d, a) {
		w.final(w.status(api.PhaseDeleted, fmt.Sprintf("target removed; the disk at %s belongs to an earlier node of that name "+
			"(uid %s) and is left alone", d.Path, d.Owner)))
		return done, nil
	}
	msg := "target removed and disk deleted"
	w.p.step("taking the snapshots asked for before deleting the disk")
	held, err := r.takeSnapshots(ctx, k)
	if err != nil {
		return w.failed(retry, err, fmt.Sprintf("deleting: the target is removed; the disk is kept until the snapshots "+
			"asked for before the deletion are taken: %v; the agent retries", err))
	}
	// With spec.keepDisk the API server wrote a snapshot image of the disk
	// with the deletion: once it is taken the disk can go. A control plane
	// that wrote none (held == 0) gets the disk kept where it is.
	if a.GetSpec().GetKeepDisk() && held == 0 {
		path := "(none)"
		if d, err := r.cfg.Store.StatDisk(ctx, k.project, k.name); err == nil {
			path = d.Path
		}
		w.final(w.status(api.PhaseDeleted, fmt.Sprintf("target removed; the disk is kept at %s because spec.keepDisk is set "+
			"and no image of it exists: snapshot it or delete the file by hand", path)))
		return done, nil
	}
	w.p.step("deleting the disk")
	if err := r.cfg.Store.DeleteDisk(ctx, k.project, k.name); err != nil {
		return w.failed(retry, err, fmt.Sprintf("deleting: the target is removed but the disk could not be deleted: %v; "+
			"check the store directory on this agent; the agent retries", err))
	}
	if a.GetSpec().GetKeepDisk() {
		msg = "target removed; the disk was kept as a snapshot image (spec.keepDisk), then deleted"
	}
	w.final(w.status(api.PhaseDeleted, msg))
	return done, nil
}

// errForeignDisk: the disk of a node's name was made for another node
// record (another uid).
var errForeignDisk = errors.New("the disk belongs to an earlier node of the same name")

// foreignDisk reports whether disk was made for another node record than
// the one a describes. Disks made before owners were recorded pass.
func foreignDisk(disk store.Disk, a *sanbootv1.Assignment) bool {
	return disk.Owner != "" && a.GetUid() != "" && disk.Owner != a.GetUid()
}

func targetIQN(k ref, a *sanbootv1.Assignment) string {
	if a.GetTargetIqn() != "" {
		return a.GetTargetIqn()
	}
	return api.TargetIQN("", k.project, k.name)
}

// desired returns the target a node's assignment asks for (without its
// backing file) and the image its disk comes from, or every reason why the
// assignment cannot be served.
func (r *Reconciler) desired(k ref, a *sanbootv1.Assignment) (target.Target, string, error) {
	errs := []error{
		api.ValidateName("assignment project", k.project),
		api.ValidateName("assignment node", k.name),
	}
	if a.GetProject() != "" && a.GetProject() != k.project {
		errs = append(errs, &api.FieldError{Field: "assignment.project", Value: a.GetProject(), Msg: "differs from the project in its key " + k.project})
	}
	if a.GetNode() != "" && a.GetNode() != k.name {
		errs = append(errs, &api.FieldError{Field: "assignment.node", Value: a.GetNode(), Msg: "differs from the node in its key " + k.name})
	}
	spec := a.GetSpec()
	if spec == nil {
		errs = append(errs, &api.FieldError{Field: "assignment.spec", Msg: "is missing: it names the image"})
		return target.Target{}, "", errors.Join(errs...)
	}
	errs = append(errs, api.ValidateName("spec.image", spec.GetImage()))
	iqn := targetIQN(k, a)
	errs = append(errs, api.ValidateIQN("assignment.targetIqn", iqn))
	initiator := a.GetInitiatorIqn()
	field := "assignment.initiatorIqn"
	if initiator == "" {
		initiator, field = spec.GetInitiatorIqn(), "spec.initiatorIqn"
	}
	if initiator == "" {
		initiator = api.DefaultInitiatorIQN(k.project, k.name)
	}
	errs = append(errs, api.ValidateIQN(field, initiator))
	chap, err := chapOf(a)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return target.Target{}, "", err
	}
	return target.Target{
		IQN:        iqn,
		Initiators: []string{initiator},
		Portals:    slices.Clone(r.cfg.Portals),
		Serial:     target.Serial(k.project, k.name),
		CHAP:       chap,
	}, spec.GetImage(), nil
}

// chapOf turns an assignment's CHAP credentials into the target's; nil when
// CHAP is off. The target package validates users and secrets.
func chapOf(a *sanbootv1.Assignment) (*target.CHAP, error) {
	spec := a.GetSpec()
	if !spec.GetChap() {
		return nil, nil
	}
	c := a.GetChap()
	if c.GetUser() == "" || c.GetSecret() == "" {
		return nil, &api.FieldError{Field: "assignment.chap", Msg: "is missing although spec.chap is on: the control plane writes it; upgrade the control plane, or turn chap off"}
	}
	chap := &target.CHAP{Incoming: target.Credentials{User: c.GetUser(), Secret: target.NewSecret(c.GetSecret())}}
	if spec.GetMutualChap() {
		if c.GetMutualUser() == "" || c.GetMutualSecret() == "" {
			return nil, &api.FieldError{Field: "assignment.chap.mutualUser", Msg: "is missing although spec.mutualChap is on: upgrade the control plane, or turn mutualChap off"}
		}
		chap.Mutual = &target.Credentials{User: c.GetMutualUser(), Secret: target.NewSecret(c.GetMutualSecret())}
	}
	return chap, nil
}

// imageProblem says why a node's image is not in the store and registers
// the node to be queued again when the image changes.
func (r *Reconciler) imageProblem(node ref, image string) (phase, msg string) {
	ik := ref{node.project, image}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting[ik] == nil {
		r.waiting[ik] = map[ref]bool{}
	}
	r.waiting[ik][node] = true
	st, ok := r.images[ik]
	switch {
	case !ok:
		return api.PhaseFailed, fmt.Sprintf("image %q does not exist in project %q: create it, or change the node's image; "+
			"the agent goes on when it appears", image, node.project)
	case st.err != nil:
		return api.PhaseFailed, fmt.Sprintf("the record of image %q cannot be decoded (%v): upgrade the agent", image, st.err)
	case st.im.GetMetadata().GetDeleteTime() != nil:
		return api.PhaseFailed, fmt.Sprintf("image %q is being deleted: change the node's image", image)
	case !r.wants(st.im):
		return api.PhaseFailed, fmt.Sprintf("image %q is not replicated to agent %q (its spec.agents is %v): add this agent "+
			"to the image's agents, or pin the node to one of them", image, r.cfg.Agent, st.im.GetSpec().GetAgents())
	case r.imageErr[ik] != "":
		return api.PhaseFailed, fmt.Sprintf("image %q could not be imported on this agent: %s", image, r.imageErr[ik])
	}
	r.q.Add(key{kindImage, ik})
	return api.PhaseProvisioning, fmt.Sprintf("waiting for image %q to be imported into this agent's store", image)
}

// wants reports whether this agent should hold im.
func (r *Reconciler) wants(im *sanbootv1.Image) bool {
	agents := im.GetSpec().GetAgents()
	return len(agents) == 0 || slices.Contains(agents, r.cfg.Agent)
}

// wakeWaiters queues the nodes waiting for image ik.
func (r *Reconciler) wakeWaiters(ik ref) {
	r.mu.Lock()
	nodes := r.waiting[ik]
	delete(r.waiting, ik)
	r.mu.Unlock()
	for n := range nodes {
		k := key{kindNode, n}
		r.q.Forget(k)
		r.q.Add(k)
	}
}
