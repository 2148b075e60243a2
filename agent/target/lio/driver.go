package lio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/internal/keylock"
)

// Config says which LIO a Driver drives.
type Config struct {
	// Root is LIO's configfs directory; DefaultRoot if empty.
	Root string
	// BusyTimeout is how long an operation that configfs refuses with
	// EBUSY (a live session, a command in flight, an object still linked)
	// is tried again before the call fails with ErrBusy; 30 s if zero.
	BusyTimeout time.Duration
	// Log receives what the driver changes; slog.Default() if nil.
	Log *slog.Logger
}

// Driver is the target.Driver for LIO. It keeps no state of its own:
// every call reads configfs, and changes only what differs. Calls for
// different targets run in parallel; calls for one target, one at a time.
type Driver struct {
	p           paths
	r           reader
	fs          *countingFS
	log         *slog.Logger
	busyTimeout time.Duration
	locks       keylock.Locks
}

var _ target.Driver = (*Driver)(nil)

// New returns a driver for the LIO under cfg.Root. It does not touch
// configfs; the first call does.
func New(cfg Config) *Driver { return newDriver(cfg, osFS{}) }

func newDriver(cfg Config, fsys fsys) *Driver {
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.BusyTimeout <= 0 {
		cfg.BusyTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c := &countingFS{fs: fsys}
	p := paths{root: filepath.Clean(cfg.Root)}
	return &Driver{
		p: p, r: reader{fs: c, p: p}, fs: c,
		log:         cfg.Log.With("driver", "lio"),
		busyTimeout: cfg.BusyTimeout,
	}
}

// Name implements target.Driver.
func (d *Driver) Name() string { return "lio" }

// LUN implements target.Driver.
func (d *Driver) LUN() int { return LUN }

// Ops returns how many configfs operations the driver has made so far.
func (d *Driver) Ops() Ops { return d.fs.ops() }

// ErrBusy is returned (wrapped) when configfs keeps refusing an operation
// with EBUSY for longer than Config.BusyTimeout.
var ErrBusy = errors.New("configfs object is busy")

// ErrLoggedIn is returned (wrapped) by Ensure when the target's disk
// (backing file, size, serial) must change while an initiator is logged
// in. The rest of the target (portals, ACL, CHAP) has converged; the disk
// converges at the first Ensure after the node logs out.
var ErrLoggedIn = errors.New("an initiator is logged in")

// ErrNoLIO is returned (wrapped) when the configfs root does not exist.
var ErrNoLIO = errors.New("LIO's configfs directory does not exist")

// checkRoot tells a missing LIO apart from other failures.
func (d *Driver) checkRoot() error {
	fi, err := d.fs.Lstat(d.p.root)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil || isNotExist(err) {
		return fmt.Errorf("%w: %s: load the target modules (modprobe target_core_mod iscsi_target_mod target_core_file "+
			"target_core_iblock) and mount configfs (mount -t configfs none /sys/kernel/config), or use --driver=tgt", ErrNoLIO, d.p.root)
	}
	return err
}

// Sessions implements target.Driver: the initiators whose ACL's info
// shows a session (ACLs are explicit, so dynamic_sessions stays empty).
func (d *Driver) Sessions(ctx context.Context, iqn string) ([]target.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sessions of target %s: %w", iqn, err)
	}
	if err := target.ValidateIQN(iqn); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	if err := d.checkRoot(); err != nil {
		return nil, fmt.Errorf("sessions of target %s: %w", iqn, err)
	}
	acls, err := d.r.sessions(iqn)
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sessions of target %s: %w", iqn, wrapRead("the target", err))
	}
	var out []target.Session
	for _, a := range acls {
		if a.Session == "" {
			continue
		}
		name := a.SessionName
		if name == "" {
			name = a.Initiator
		}
		out = append(out, target.Session{Initiator: name, Address: a.SessionAddress})
	}
	return target.SortSessions(out), nil
}

// Names implements target.Namer: the target directories, read with one
// readdir (a target List would skip because it vanished meanwhile is
// named).
func (d *Driver) Names(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	if err := d.checkRoot(); err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	names, err := d.r.targetNames()
	if err != nil {
		return nil, fmt.Errorf("list targets: %w", wrapRead("the targets", err))
	}
	return names, nil
}

// List implements target.Driver: every target in configfs, in the
// driver's model (see model).
func (d *Driver) List(ctx context.Context) ([]target.Target, error) {
	names, err := d.Names(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]target.Target, 0, len(names))
	for _, iqn := range names {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list targets: %w", err)
		}
		t, _, _, ok, err := d.r.readModel(iqn)
		if err != nil {
			return nil, fmt.Errorf("list targets: %s: %w", iqn, wrapRead("the target", err))
		}
		if ok {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b target.Target) int { return cmp.Compare(a.IQN, b.IQN) })
	return out, nil
}
