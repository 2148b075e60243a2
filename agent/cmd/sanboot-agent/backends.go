package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/sanboot/sanboot/agent/store"
	fakestore "github.com/sanboot/sanboot/agent/store/fake"
	"github.com/sanboot/sanboot/agent/store/filestore"
	"github.com/sanboot/sanboot/agent/target"
	faketarget "github.com/sanboot/sanboot/agent/target/fake"
	"github.com/sanboot/sanboot/agent/target/lio"
	"github.com/sanboot/sanboot/agent/target/tgt"
)

// availableDrivers are the --driver values this release knows.
const availableDrivers = "lio, tgt, fake"

// defaultDriver is lio when LIO's configfs directory exists, else "" (the
// flag is then required).
func defaultDriver(configfsRoot string) string {
	if fi, err := os.Stat(configfsRoot); err == nil && fi.IsDir() {
		return "lio"
	}
	return ""
}

// Modes of --tgtd.
const (
	tgtdManaged = "managed" // the agent runs its own tgtd and stops it on exit
	tgtdSystem  = "system"  // a tgtd that runs as its own service
)

// backends are the store and target driver the flags ask for.
type backends struct {
	store     store.Store
	storeKind string // file, rbd or fake
	driver    target.Driver
	// close releases them: the managed tgtd stops (its targets go with it),
	// the file store unlocks its root.
	close func(context.Context) error
	// keeper restarts a managed tgtd that dies; nil for other drivers.
	// Its Run calls onTgtd when tgtd dies or runs again: set onTgtd
	// before starting Run.
	keeper *tgt.Keeper
	onTgtd func()
}

// targetProblem is the kept tgtd's outage, nil without one (or keeper).
func (b *backends) targetProblem() error {
	if b.keeper == nil {
		return nil
	}
	return b.keeper.Problem()
}

// openBackends builds the store and driver. open fetches upload and url
// sources for the file store (nil: url only).
func openBackends(ctx context.Context, c config, open filestore.Opener, log *slog.Logger) (*backends, error) {
	if c.driver == "fake" {
		log.Warn("the fake driver and store serve no iSCSI and keep no data: use them for tests and benchmarks only",
			"capacity", c.fakeCapacity)
		st, err := fakestore.New(fakestore.Options{Root: c.storeDir, CapacityBytes: c.fakeCapacity})
		if err != nil {
			return nil, err
		}
		return &backends{store: st, storeKind: "fake", driver: faketarget.New(), close: func(context.Context) error { return nil }}, nil
	}

	fs, err := openStore(ctx, c, open, log)
	if err != nil {
		return nil, err
	}
	b := &backends{store: fs, storeKind: c.storeKind, close: func(context.Context) error { return fs.Close() }, onTgtd: func() {}}
	if c.driver == "lio" {
		// LIO lives in the kernel: its targets stay when the agent stops,
		// so that running nodes keep their disks; the agent converges them
		// when it starts again.
		d := lio.New(lio.Config{Root: c.configfsRoot, Log: log})
		if _, err := d.List(ctx); err != nil {
			fs.Close()
			return nil, fmt.Errorf("--driver=lio: %w", err)
		}
		b.driver = d
		return b, nil
	}
	switch c.tgtd {
	case tgtdSystem:
		b.driver = tgt.New(tgt.Config{ControlPort: c.tgtdControl, Log: log, RBD: c.ceph.tgt()})
	case tgtdManaged:
		// The reconciler is told when the kept tgtd dies or comes back
		// (run sets onTgtd once the reconciler exists).
		m, err := tgt.Keep(ctx, tgt.ManagedConfig{ControlPort: c.tgtdControl, Portals: c.portals, Log: log, RBD: c.ceph.tgt()}, func() { b.onTgtd() })
		if err != nil {
			fs.Close()
			return nil, fmt.Errorf("start tgtd (--tgtd=managed): %w", err)
		}
		log.Info("tgtd started", "pid", m.PID(), "control-port", m.ControlPort(), "portals", c.portals)
		b.driver, b.keeper = m.Driver(), m
		b.close = func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			return errors.Join(m.Stop(ctx), fs.Close())
		}
	}
	return b, nil
}
