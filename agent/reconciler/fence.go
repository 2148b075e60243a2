package reconciler

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// errFenced: the agent serves nothing while it is fenced.
var errFenced = errors.New("this agent has lost its registration lease and serves no target until it has it again " +
	"(its disks live in a shared store: another agent of the storage domain may be serving them now)")

// Fence stops (on) or resumes (off) serving. An agent whose disks other
// agents can serve (a shared store, such as an RBD pool) fences itself when
// it loses its registration lease: the scheduler may then give its nodes to
// another agent of the storage domain, and two agents must never export
// one disk for writing at once. Fencing removes every sanboot target at
// once, and no node pass builds one until Fence(false); unfencing asks for
// a resync, which builds again the targets whose assignments are still
// this agent's.
func (r *Reconciler) Fence(ctx context.Context, on bool) error {
	r.fenced.Store(on)
	if !on {
		r.log.Info("registration lease back: serving again")
		r.Resync()
		return nil
	}
	r.log.Warn("registration lease lost: removing every target until it is back, so that no disk is served by two agents")
	targets, err := r.cfg.Driver.List(ctx)
	if err != nil {
		return fmt.Errorf("fence: list targets: %w", err)
	}
	var errs []error
	for _, t := range targets {
		if strings.HasPrefix(t.IQN, r.cfg.ManagedPrefix) {
			if err := r.cfg.Driver.Delete(ctx, t.IQN); err != nil {
				errs = append(errs, fmt.Errorf("fence: remove target %s: %w", t.IQN, err))
			}
		}
	}
	return errors.Join(errs...)
}
