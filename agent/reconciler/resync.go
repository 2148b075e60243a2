package reconciler

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// resync compares desired (the assignments and images mirrored from etcd)
// with actual (store and driver), queues every node and image that
// differs (a Ready node also when the sessions on its target are not
// those its status lists), removes sanboot targets nobody wants and logs
// orphan disks.
func (r *Reconciler) resync(ctx context.Context) error {
	// Actual state first: a target made after this list belongs to an
	// assignment that the snapshot below already holds, so the GC never
	// removes a target it has not seen wanted.
	targets, err := r.cfg.Driver.List(ctx)
	if err != nil {
		return fmt.Errorf("list targets: %w", err)
	}
	disks, err := r.cfg.Store.ListDisks(ctx)
	if err != nil {
		return fmt.Errorf("list disks: %w", err)
	}
	storeImages, err := r.cfg.Store.ListImages(ctx)
	if err != nil {
		return fmt.Errorf("list images: %w", err)
	}
	replicas, err := r.cfg.Client.Get(ctx, api.AgentReplicasPrefix(r.cfg.Agent), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("list image replicas: %w", err)
	}

	r.mu.Lock()
	assigns := make(map[ref]assignState, len(r.assigns))
	for k, v := range r.assigns {
		assigns[k] = v
	}
	imageKeys := map[ref]bool{} // images to look at
	for k, st := range r.images {
		if st.err != nil || r.wants(st.im) {
			imageKeys[k] = true
		}
	}
	r.mu.Unlock()

	actual := make(map[string]target.Target, len(targets))
	for _, t := range targets {
		actual[t.IQN] = t
	}
	diskOf := make(map[ref]int, len(disks))
	for i, d := range disks {
		diskOf[ref{d.Project, d.Node}] = i
	}
	wanted := wantedIQNs(assigns)
	sessions := r.sessionReader(ctx)
	queued := 0
	var missing []ref // nodes with a disk but no target, whose status this process has not written
	for k, st := range assigns {
		covered := r.w.covered(api.NodeStatusKey(k.project, k.name, r.cfg.Agent), st.rev)
		need := !covered
		switch {
		case st.err != nil:
		case st.a.GetDeleting():
			need = true
		default:
			want, _, err := r.desired(k, st.a)
			if err != nil {
				break
			}
			i, ok := diskOf[k]
			if !ok {
				need = true
				break
			}
			want.BackingPath, want.SizeBytes = disks[i].Path, disks[i].SizeBytes
			got, ok := actual[want.IQN]
			if !ok && !covered {
				missing = append(missing, k)
			}
			if !ok || !target.SameConfig(got, want) || r.sessionsChanged(k, want.IQN, sessions) {
				need = true
			}
		}
		if need {
			r.q.Add(key{kindNode, k})
			queued++
		}
	}
	r.markMissing(missing)

	removed := 0
	for _, t := range targets {
		if strings.HasPrefix(t.IQN, r.cfg.ManagedPrefix) && !wanted[t.IQN] {
			if err := r.cfg.Driver.Delete(ctx, t.IQN); err != nil {
				r.log.Warn("could not remove an unwanted target; the next resync tries again", "iqn", t.IQN, "err", err)
				continue
			}
			r.log.Info("removed a target no assignment wants", "iqn", t.IQN)
			removed++
		}
	}

	r.mu.Lock()
	for _, d := range disks {
		k := ref{d.Project, d.Node}
		if _, ok := assigns[k]; ok || r.orphans[k] {
			continue
		}
		r.orphans[k] = true
		r.log.Warn("orphan disk: no assignment names it; it is kept (a disk is deleted only when its node is deleted); "+
			"remove it by hand if nobody needs it", "project", d.Project, "node", d.Node, "path", d.Path)
	}
	r.mu.Unlock()

	// Images are few: look at every one this agent should hold, and at
	// every copy or replica it has of one it should not (any more).
	for _, im := range storeImages {
		imageKeys[ref{im.Project, im.Name}] = true
	}
	for _, kv := range replicas.Kvs {
		project, image, agent, err := api.ParseReplicaKey(string(kv.Key))
		if err == nil && agent == r.cfg.Agent {
			imageKeys[ref{project, image}] = true
		}
	}
	for k := range imageKeys {
		r.q.Add(key{kindImage, k})
	}
	r.log.Debug("resync", "assignments", len(assigns), "queued", queued, "targets", len(targets),
		"removed", removed, "images", len(imageKeys))
	return nil
}

// markMissing says, at once, that the targets of nodes are not served:
// nodes whose disk is here but whose target the target system does not
// have, and whose status this process has not written. That is every node
// of an agent started after a reboot emptied LIO (or after a managed tgtd
// started empty): their statuses still say Ready from before, and the
// rebuild, queued above, reaches the last of 500 nodes seconds later.
// Until its own pass writes its status, each says Unavailable, and the
// agent's Problem counts them (as for targets lost while it runs, see
// health.go). A node this process has marked Ready meanwhile is left alone.
func (r *Reconciler) markMissing(nodes []ref) {
	if len(nodes) == 0 {
		return
	}
	marked := 0
	r.mu.Lock()
	for _, k := range nodes {
		st, ok := r.assigns[k]
		if _, served := r.served[k]; served || !ok || st.a == nil || st.a.GetDeleting() {
			continue
		}
		r.lost[k] = true
		r.w.submit(statusItem(r.cfg.Agent, k.project, k.name, st.rev, &sanbootv1.NodeStatus{
			Phase: api.PhaseUnavailable, Agent: r.cfg.Agent, ObservedGeneration: st.a.GetGeneration(),
			Message: fmt.Sprintf("target %s is not served by the %s target system (the host rebooted, or the target system "+
				"restarted empty); the agent builds it again", targetIQN(k, st.a), r.cfg.Driver.Name()),
		}))
		marked++
	}
	r.mu.Unlock()
	if marked > 0 {
		r.log.Info("targets of nodes are missing; their nodes say Unavailable until they are built again", "nodes", marked)
		kick(r.healthCh) // the agent's Problem says it now
	}
}

// gcTargets removes sanboot targets that no assignment wants.
func (r *Reconciler) gcTargets(ctx context.Context) error {
	targets, err := r.cfg.Driver.List(ctx)
	if err != nil {
		return fmt.Errorf("list targets: %w", err)
	}
	r.mu.Lock()
	wanted := wantedIQNs(r.assigns)
	r.mu.Unlock()
	for _, t := range targets {
		if strings.HasPrefix(t.IQN, r.cfg.ManagedPrefix) && !wanted[t.IQN] {
			if err := r.cfg.Driver.Delete(ctx, t.IQN); err != nil {
				return fmt.Errorf("remove target %s: %w", t.IQN, err)
			}
			r.log.Info("removed a target no assignment wants", "iqn", t.IQN)
		}
	}
	return nil
}

// wantedIQNs are the targets the GC keeps: those of every assignment not
// being deleted, valid or not. A node whose spec became invalid keeps its
// old target (it may be running from it) until it is deleted.
func wantedIQNs(assigns map[ref]assignState) map[string]bool {
	wanted := make(map[string]bool, len(assigns))
	for k, st := range assigns {
		switch {
		case st.err != nil:
			wanted[api.TargetIQN("", k.project, k.name)] = true
		case !st.a.GetDeleting():
			wanted[targetIQN(k, st.a)] = true
		}
	}
	return wanted
}
