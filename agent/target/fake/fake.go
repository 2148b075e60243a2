// Package fake is an in-memory target.Driver: a FAKE that serves nothing on
// the network. It exists for unit tests and for control-plane benchmarks
// (sanboot-agent --driver=fake) and passes the same conformance suite
// (targettest) as the real drivers.
package fake

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/sanboot/sanboot/agent/target"
)

// LUN is the LUN the fake reports, the same as tgt's.
const LUN = 1

// Driver keeps targets in a map. The zero value is not usable; call New.
type Driver struct {
	mu      sync.Mutex
	targets map[string]target.Target
	// sessions are the fake logins (Login), by target IQN.
	sessions map[string][]target.Session
	fail     func(op, iqn string) error
	ensures  int
}

var _ target.SessionReporter = (*Driver)(nil)

// New returns an empty fake driver.
func New() *Driver {
	return &Driver{targets: map[string]target.Target{}, sessions: map[string][]target.Session{}}
}

// Name implements target.Driver.
func (d *Driver) Name() string { return "fake" }

// LUN implements target.Driver.
func (d *Driver) LUN() int { return LUN }

// Ensure implements target.Driver.
func (d *Driver) Ensure(ctx context.Context, t target.Target) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	if err := target.Validate(t); err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		if err := d.fail("ensure", t.IQN); err != nil {
			return fmt.Errorf("ensure target %s: %w", t.IQN, err)
		}
	}
	d.ensures++
	t = t.Normalized()
	t.LUN = LUN
	d.targets[t.IQN] = t
	return nil
}

// EnsureSessions implements target.SessionReporter: Ensure, then the
// target's fake logins.
func (d *Driver) EnsureSessions(ctx context.Context, t target.Target) ([]target.Session, error) {
	if err := d.Ensure(ctx, t); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return target.SortSessions(slices.Clone(d.sessions[t.IQN])), nil
}

// ListSessions implements target.SessionReporter: every target's fake
// logins.
func (d *Driver) ListSessions(ctx context.Context) (map[string][]target.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]target.Session{}
	for iqn, s := range d.sessions {
		if len(s) > 0 {
			out[iqn] = target.SortSessions(slices.Clone(s))
		}
	}
	return out, nil
}

// Delete implements target.Driver.
func (d *Driver) Delete(ctx context.Context, iqn string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	if err := target.ValidateIQN(iqn); err != nil {
		return fmt.Errorf("delete target: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		if err := d.fail("delete", iqn); err != nil {
			return fmt.Errorf("delete target %s: %w", iqn, err)
		}
	}
	delete(d.targets, iqn)
	delete(d.sessions, iqn) // deleting a target drops its sessions
	return nil
}

// Sessions implements target.Driver: the fake logins made with Login.
func (d *Driver) Sessions(ctx context.Context, iqn string) ([]target.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sessions of target %s: %w", iqn, err)
	}
	if err := target.ValidateIQN(iqn); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return target.SortSessions(slices.Clone(d.sessions[iqn])), nil
}

// Login makes a FAKE session of initiator (from address) on target iqn, as
// a real initiator's login would, refused unless the target exists and its
// ACL names the initiator. Logout ends it.
func (d *Driver) Login(iqn, initiator, address string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.targets[iqn]
	if !ok || !slices.Contains(t.Initiators, initiator) {
		return fmt.Errorf("fake login of %s to %s refused: no such target or not in its ACL", initiator, iqn)
	}
	d.sessions[iqn] = append(d.sessions[iqn], target.Session{Initiator: initiator, Address: address})
	return nil
}

// Logout ends initiator's fake sessions on target iqn.
func (d *Driver) Logout(iqn, initiator string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sessions[iqn] = slices.DeleteFunc(d.sessions[iqn], func(s target.Session) bool { return s.Initiator == initiator })
}

// List implements target.Driver.
func (d *Driver) List(ctx context.Context) ([]target.Target, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]target.Target, 0, len(d.targets))
	for _, iqn := range slices.Sorted(maps.Keys(d.targets)) {
		out = append(out, d.targets[iqn].Normalized())
	}
	return out, nil
}

// Reset forgets every target, as a reboot forgets LIO's configuration.
func (d *Driver) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.targets)
	clear(d.sessions)
}

// FailWith makes every later Ensure and Delete call fail(op, iqn) first
// ("ensure" or "delete") and fail with its error when it is not nil. Nil
// removes the hook.
func (d *Driver) FailWith(fail func(op, iqn string) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = fail
}

// Ensures is how many Ensure calls changed (or re-stated) a target.
func (d *Driver) Ensures() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ensures
}
