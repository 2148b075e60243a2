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
	fail    func(op, iqn string) error
	ensures int
}

// New returns an empty fake driver.
func New() *Driver { return &Driver{targets: map[string]target.Target{}} }

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
	return nil
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
