package reconciler

import (
	"context"
	"fmt"
	"time"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// The target checks keep "Ready" true. A node is Ready once its target was
// built; after that its target can vanish behind the agent's back: tgtd
// killed or crashed (a managed tgtd is restarted empty), a system tgtd
// stopped or restarted by its service manager. Every HealthInterval, and
// whenever Config.TargetProblem changes (CheckTargets), the reconciler
// asks the target system for its targets. While the target system is down
// or a Ready node's target is missing:
//
//   - that node's status says Unavailable, with what is wrong;
//   - the agent's Problem says it (its record, `get agents`, /readyz);
//   - once the target system answers, the lost nodes are queued, their
//     targets are built again and their statuses say Ready again.

// served is what the reconciler knows of a node whose last status said Ready.
type served struct {
	iqn string
	seq uint64 // when it was marked, to ignore marks newer than a listing
	// sessions are those the status lists (sessionsKey).
	sessions string
	// gen is the spec generation the Ready status describes.
	gen int64
}

// CheckTargets asks for a target check now (the target system's state
// changed: a managed tgtd died or was started again).
func (r *Reconciler) CheckTargets() { kick(r.healthCh) }

// Problem is why this agent does not serve every target it should right
// now ("" when it does): its target system is down, or it is rebuilding
// targets that vanished.
func (r *Reconciler) Problem() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.problemLocked()
}

func (r *Reconciler) problemLocked() string {
	switch {
	case r.targetProblem != "":
		return r.targetProblem
	case len(r.lost) > 0:
		return fmt.Sprintf("rebuilding %d target(s) that the %s target system lost", len(r.lost), r.cfg.Driver.Name())
	case r.storeFull != "":
		return r.storeFull
	}
	return ""
}

// healthLoop runs the target checks until ctx ends.
func (r *Reconciler) healthLoop(ctx context.Context) {
	select {
	case <-r.synced:
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(r.cfg.HealthInterval)
	defer tick.Stop()
	last := ""
	for {
		r.checkTargets(ctx)
		if p := r.Problem(); p != last {
			last = p
			if p != "" {
				r.log.Warn("not serving every target", "problem", p)
			} else {
				r.log.Info("every target is served again")
			}
			if r.cfg.OnProblem != nil {
				r.cfg.OnProblem(p)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-r.healthCh:
		}
	}
}

// checkTargets compares the targets of Ready nodes with what the target
// system serves and marks the missing ones lost (see above).
func (r *Reconciler) checkTargets(ctx context.Context) {
	r.mu.Lock()
	seq := r.seq
	r.mu.Unlock()
	var problem string
	if f := r.cfg.TargetProblem; f != nil {
		if err := f(); err != nil {
			problem = err.Error()
		}
	}
	listed := map[string]bool{}
	if problem == "" {
		names, err := target.Names(ctx, r.cfg.Driver)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			problem = fmt.Sprintf("the %s target system does not answer, so no target is served: %v; "+
				"start it again (e.g. systemctl start tgt for --tgtd=system); the agent rebuilds the targets when it answers",
				r.cfg.Driver.Name(), oneLine(err))
		}
		for _, iqn := range names {
			listed[iqn] = true
		}
	}

	r.checkStore(ctx)

	// Marks are written under r.mu, as noteStatus writes final statuses:
	// whichever comes last wins both in etcd and here.
	marked := 0
	var wake []ref
	r.mu.Lock()
	r.targetProblem = problem
	for k, s := range r.served {
		if s.seq > seq || problem == "" && listed[s.iqn] {
			continue
		}
		st, ok := r.assigns[k]
		delete(r.served, k)
		if !ok || st.a == nil {
			continue
		}
		r.lost[k] = true
		msg := problem
		if msg == "" {
			msg = fmt.Sprintf("target %s is no longer served by the %s target system (it was restarted or the target removed); "+
				"the agent builds it again", s.iqn, r.cfg.Driver.Name())
		}
		r.w.submit(statusItem(r.cfg.Agent, k.project, k.name, st.rev, &sanbootv1.NodeStatus{
			Phase: api.PhaseUnavailable, Message: msg, Agent: r.cfg.Agent, ObservedGeneration: st.a.GetGeneration(),
		}))
		marked++
	}
	if problem == "" {
		for k := range r.lost {
			wake = append(wake, k)
		}
	}
	r.mu.Unlock()
	if marked > 0 {
		r.log.Warn("targets of Ready nodes are not served; their nodes say Unavailable", "nodes", marked, "problem", problem)
	}
	for _, k := range wake {
		r.q.Forget(key{kindNode, k})
		r.q.Add(key{kindNode, k})
	}
}

// checkStore notes whether the store is full; when that changes, the
// Ready nodes are queued, so that their statuses say it (or stop saying it).
func (r *Reconciler) checkStore(ctx context.Context) {
	c, err := r.cfg.Store.Capacity(ctx)
	if err != nil {
		return // the store's own errors show where they happen
	}
	full := ""
	if c.CapacityBytes > 0 && c.FreeBytes < r.cfg.StoreFullBelow {
		full = fmt.Sprintf("the store of agent %s is full (%d bytes free of %d): writes to the disks it holds fail; "+
			"free space there (delete nodes or images, or grow the file system)", r.cfg.Agent, c.FreeBytes, c.CapacityBytes)
	}
	r.mu.Lock()
	changed := (full == "") != (r.storeFull == "")
	r.storeFull = full
	var wake []ref
	if changed {
		for k := range r.served {
			wake = append(wake, k)
		}
	}
	r.mu.Unlock()
	if changed && full != "" {
		r.log.Warn("the store is full: writes to node disks fail", "free", c.FreeBytes, "capacity", c.CapacityBytes)
	}
	for _, k := range wake {
		r.q.Add(key{kindNode, k})
	}
}

// storeWarning is what a Ready node's status adds while the store is
// full, "" otherwise.
func (r *Reconciler) storeWarning() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.storeFull == "" {
		return ""
	}
	return "but " + r.storeFull
}

// finalStatus writes the final status of a node's pass (submit) and
// records it for the checks: a Ready node is watched; any other outcome
// ends its being lost. Both happen under r.mu, as the checks' marks do.
func (r *Reconciler) finalStatus(k ref, st *sanbootv1.NodeStatus, submit func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	submit()
	wasLost := r.lost[k]
	if st.GetPhase() == api.PhaseReady {
		r.seq++
		r.served[k] = served{iqn: st.GetTargetIqn(), seq: r.seq, sessions: sessionsKey(st.GetSessions()), gen: st.GetObservedGeneration()}
		delete(r.lost, k)
	} else {
		delete(r.served, k)
		if st.GetPhase() != api.PhaseUnavailable {
			delete(r.lost, k)
		}
	}
	if wasLost && len(r.lost) == 0 {
		kick(r.healthCh) // report the end of the problem now
	}
}

// forgetNode drops what the checks know of a node whose assignment is gone.
func (r *Reconciler) forgetNodeLocked(k ref) {
	delete(r.served, k)
	if r.lost[k] {
		delete(r.lost, k)
		kick(r.healthCh)
	}
}

// targetDown is the target system's known problem, "" when none.
func (r *Reconciler) targetDown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.targetProblem
}
