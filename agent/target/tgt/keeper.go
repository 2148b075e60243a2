package tgt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Keeper keeps a managed tgtd running: when tgtd dies (killed, crashed) it
// starts it again on the same control port and portals, with backoff, and
// says so through Problem until the new tgtd answers. The targets die with
// tgtd; the agent's reconciler notices that they are gone and builds them
// again (see agent/reconciler's target checks).
type Keeper struct {
	cfg     ManagedConfig
	log     *slog.Logger
	drv     *Driver
	changed func()

	mu       sync.Mutex
	cur      *Managed
	problem  error
	stopped  bool
	restarts int
}

// Keep starts tgtd (StartManaged) and returns a Keeper for it; Run then
// restarts tgtd whenever it dies. changed, if not nil, is called (from
// Run's goroutine) whenever Problem changes.
func Keep(ctx context.Context, cfg ManagedConfig, changed func()) (*Keeper, error) {
	m, err := StartManaged(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if changed == nil {
		changed = func() {}
	}
	return &Keeper{cfg: m.cfg, log: m.log, cur: m, drv: m.Driver(), changed: changed}, nil
}

// Driver is the driver of the kept tgtd: one value for every tgtd Keeper
// starts, since they share the control port.
func (k *Keeper) Driver() *Driver { return k.drv }

// ControlPort is tgtd's control port.
func (k *Keeper) ControlPort() int { return k.cfg.ControlPort }

// PID is the process id of the current tgtd.
func (k *Keeper) PID() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur.PID()
}

// Problem is nil while tgtd runs, else why it does not (it died; it could
// not be started again).
func (k *Keeper) Problem() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.problem
}

// Restarts is how many times tgtd was started again after it died.
func (k *Keeper) Restarts() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.restarts
}

func (k *Keeper) setProblem(err error) {
	k.mu.Lock()
	k.problem = err
	k.mu.Unlock()
	k.changed()
}

// Run restarts tgtd whenever it dies, until ctx ends or Stop is called.
func (k *Keeper) Run(ctx context.Context) error {
	for {
		k.mu.Lock()
		m := k.cur
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.Done():
		}
		k.mu.Lock()
		stopped := k.stopped
		k.mu.Unlock()
		if stopped {
			return nil
		}
		m.removeSocket()
		died := fmt.Errorf("the managed tgtd (pid %d, control port %d) died (%v): its targets are gone; the agent is starting it again "+
			"and then rebuilds them%s", m.PID(), k.cfg.ControlPort, m.exitErr, m.output.suffix())
		k.log.Error("tgtd died; starting it again", "pid", m.PID(), "exit", m.exitErr)
		k.setProblem(died)
		backoff := 200 * time.Millisecond
		for {
			next, err := StartManaged(ctx, k.cfg)
			if err == nil {
				k.mu.Lock()
				if k.stopped { // Stop ran meanwhile: this tgtd is not wanted
					k.mu.Unlock()
					next.kill()
					return nil
				}
				k.cur = next
				k.restarts++
				k.mu.Unlock()
				k.log.Info("tgtd started again; the agent rebuilds its targets", "pid", next.PID())
				k.setProblem(nil)
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			k.log.Error("could not start tgtd again; retrying", "err", err, "in", backoff)
			k.setProblem(fmt.Errorf("the managed tgtd (control port %d) died and cannot be started again: %w; the agent retries "+
				"(check that the tgt package is installed and that nothing else took its portals)", k.cfg.ControlPort, err))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// Stop stops the current tgtd (Managed.Stop) and keeps Run from starting
// another.
func (k *Keeper) Stop(ctx context.Context) error {
	k.mu.Lock()
	k.stopped = true
	m := k.cur
	k.mu.Unlock()
	err := m.Stop(ctx)
	if k.Problem() != nil {
		return errors.Join(err, k.Problem())
	}
	return err
}
