package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sanboot/sanboot/agent/store"
	fakestore "github.com/sanboot/sanboot/agent/store/fake"
	"github.com/sanboot/sanboot/agent/store/filestore"
	"github.com/sanboot/sanboot/agent/store/rbd"
	"github.com/sanboot/sanboot/agent/target"
	faketarget "github.com/sanboot/sanboot/agent/target/fake"
	"github.com/sanboot/sanboot/agent/target/lio"
	"github.com/sanboot/sanboot/agent/target/tgt"
)

// This file is the one table of the target drivers and stores an agent
// can run: the command's flags, their checks and Run all read it.

// driverKind is a target driver an agent can run.
type driverKind struct {
	name string
	// open starts the driver into b (b.store is open).
	open func(ctx context.Context, c Config, b *backends, log *slog.Logger) error
	// outlives says whether the driver's targets stay when the agent
	// stops (LIO lives in the kernel, a system tgtd in its own service;
	// a managed tgtd's targets go with it).
	outlives func(Config) bool
}

// storeKind is a store an agent can keep images and disks in.
type storeKind struct {
	name string
	open func(ctx context.Context, c Config, open filestore.Opener, log *slog.Logger) (closableStore, error)
	// drivers are the drivers that cannot serve its disks, and why.
	drivers map[string]string
	// withFake: the fake store, which comes with --driver=fake rather
	// than a --store of its own.
	withFake bool
}

func driverKinds() []driverKind {
	return []driverKind{
		{name: "lio", open: openLIO, outlives: func(Config) bool { return true }},
		{name: "tgt", open: openTgt, outlives: func(c Config) bool { return c.Tgtd == TgtdSystem }},
		{name: "fake", open: func(context.Context, Config, *backends, *slog.Logger) error { return nil }, outlives: func(Config) bool { return false }},
	}
}

func storeKinds() []storeKind {
	return []storeKind{
		{name: StoreFile, open: openFileStore},
		{name: StoreRBD, open: openRBD, drivers: map[string]string{
			"lio":  "LIO can serve an RBD image only once the kernel's rbd module maps it, which this agent does not do: use --driver=tgt (tgt's rbd backing store, Debian's tgt-rbd)",
			"fake": "the fake driver has its own in-memory store: use --driver=tgt",
		}},
		{name: StoreFake, open: openFakeStore, withFake: true, drivers: map[string]string{
			"lio": "the fake store keeps no data: use it with --driver=fake",
			"tgt": "the fake store keeps no data: use it with --driver=fake",
		}},
	}
}

// Names of Config.Store.
const (
	StoreFile = "file"
	StoreRBD  = "rbd"
	StoreFake = "fake" // in memory, with the fake driver: tests and benchmarks only
)

// Modes of Config.Tgtd.
const (
	TgtdManaged = "managed" // the agent runs its own tgtd and stops it on exit
	TgtdSystem  = "system"  // a tgtd that runs as its own service
)

// DriverNames are the target drivers, for --driver: "lio, tgt, fake".
func DriverNames() string {
	var names []string
	for _, d := range driverKinds() {
		names = append(names, d.name)
	}
	return strings.Join(names, ", ")
}

// StoreNames are the stores one chooses with --store: "file or rbd" (the
// fake store comes with the fake driver).
func StoreNames() string {
	var names []string
	for _, s := range storeKinds() {
		if !s.withFake {
			names = append(names, s.name)
		}
	}
	return strings.Join(names, " or ")
}

// DefaultDriver is lio when LIO's configfs directory exists, else "" (the
// flag is then required).
func DefaultDriver(configfsRoot string) string {
	if fi, err := os.Stat(configfsRoot); err == nil && fi.IsDir() {
		return "lio"
	}
	return ""
}

// StoreFor is the store --store names for driver: the fake driver
// replaces the file store with the fake one.
func StoreFor(driver, flag string) string {
	if driver == "fake" && flag == StoreFile {
		return StoreFake
	}
	return flag
}

func findDriver(name string) (driverKind, error) {
	for _, d := range driverKinds() {
		if d.name == name {
			return d, nil
		}
	}
	return driverKind{}, fmt.Errorf("--driver=%q is unknown: available drivers: %s", name, DriverNames())
}

func findStore(name string) (storeKind, error) {
	for _, s := range storeKinds() {
		if s.name == name {
			return s, nil
		}
	}
	return storeKind{}, fmt.Errorf("--store=%q: use %s", name, StoreNames())
}

// CheckStore says whether driver can serve the disks of store (both
// known names).
func CheckStore(store, driver string) error {
	s, err := findStore(store)
	if err != nil {
		return err
	}
	if why, ok := s.drivers[driver]; ok {
		return fmt.Errorf("--store=%s with --driver=%s: %s", store, driver, why)
	}
	return nil
}

// backends are the store and target driver of a Config.
type backends struct {
	store     store.Store
	storeKind string // file, rbd or fake
	driver    target.Driver
	// targetsOutlive: the driver's targets stay when the agent stops.
	targetsOutlive bool
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

// openBackends opens the store, then starts the driver, as c names them.
// open fetches upload and url sources for the file and rbd stores.
func openBackends(ctx context.Context, c Config, open filestore.Opener, log *slog.Logger) (*backends, error) {
	dk, err := findDriver(c.Driver)
	if err != nil {
		return nil, err
	}
	sk, err := findStore(c.Store)
	if err != nil {
		return nil, err
	}
	st, err := sk.open(ctx, c, open, log)
	if err != nil {
		return nil, err
	}
	b := &backends{store: st, storeKind: sk.name, driver: faketarget.New(), targetsOutlive: dk.outlives(c),
		close: func(context.Context) error { return st.Close() }, onTgtd: func() {}}
	if err := dk.open(ctx, c, b, log); err != nil {
		st.Close()
		return nil, err
	}
	return b, nil
}

// openLIO: LIO lives in the kernel; its targets stay when the agent
// stops, so that running nodes keep their disks; the agent converges them
// when it starts again.
func openLIO(ctx context.Context, c Config, b *backends, log *slog.Logger) error {
	d := lio.New(lio.Config{Root: c.ConfigfsRoot, Log: log})
	if _, err := d.List(ctx); err != nil {
		return fmt.Errorf("--driver=lio: %w", err)
	}
	b.driver = d
	return nil
}

func openTgt(ctx context.Context, c Config, b *backends, log *slog.Logger) error {
	if c.Tgtd == TgtdSystem {
		b.driver = tgt.New(tgt.Config{ControlPort: c.TgtdControl, Log: log, RBD: c.Ceph.tgt()})
		return nil
	}
	// The reconciler is told when the kept tgtd dies or comes back (Run
	// sets onTgtd once the reconciler exists).
	m, err := tgt.Keep(ctx, tgt.ManagedConfig{ControlPort: c.TgtdControl, Portals: c.Portals, Log: log, RBD: c.Ceph.tgt()}, func() { b.onTgtd() })
	if err != nil {
		return fmt.Errorf("start tgtd (--tgtd=managed): %w", err)
	}
	log.Info("tgtd started", "pid", m.PID(), "control-port", m.ControlPort(), "portals", c.Portals)
	b.driver, b.keeper = m.Driver(), m
	closeStore := b.close
	b.close = func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return errors.Join(m.Stop(ctx), closeStore(ctx))
	}
	return nil
}

// closableStore is a store the agent releases when it stops.
type closableStore interface {
	store.Store
	Close() error
}

func openFileStore(_ context.Context, c Config, open filestore.Opener, log *slog.Logger) (closableStore, error) {
	fs, err := filestore.New(filestore.Options{Root: c.StoreDir, Open: open, Log: log})
	if err != nil {
		return nil, fmt.Errorf("open the store in %s: %w", c.StoreDir, err)
	}
	return fs, nil
}

func openRBD(ctx context.Context, c Config, open filestore.Opener, log *slog.Logger) (closableStore, error) {
	s, err := rbd.New(ctx, rbd.Options{Conf: c.Ceph.Conf, User: c.Ceph.User, Keyring: c.Ceph.Keyring, Pool: c.Ceph.Pool,
		Agent: c.Name, MaxCloneDepth: c.Ceph.MaxCloneDepth, Open: rbd.Opener(open), Log: log})
	if err != nil {
		return nil, fmt.Errorf("--store=rbd: %w", err)
	}
	return s, nil
}

// fakeStore is the fake store, which has nothing to release.
type fakeStore struct{ *fakestore.Store }

func (fakeStore) Close() error { return nil }

func openFakeStore(_ context.Context, c Config, _ filestore.Opener, log *slog.Logger) (closableStore, error) {
	log.Warn("the fake store keeps no data: use it for tests and benchmarks only", "capacity", c.FakeCapacity)
	st, err := fakestore.New(fakestore.Options{Root: c.StoreDir, CapacityBytes: c.FakeCapacity})
	if err != nil {
		return nil, err
	}
	return fakeStore{st}, nil
}

// Ceph is how an agent with the rbd store reaches its pool.
type Ceph struct {
	Conf, User, Keyring, Pool string
	MaxCloneDepth             int
}

// tgt is what tgtd's rbd backing store needs (the key stays in the keyring).
func (c Ceph) tgt() tgt.RBDConfig { return tgt.RBDConfig{Conf: c.Conf, User: c.User} }

// Check checks the settings of the rbd store.
func (c Ceph) Check() error {
	var errs []error
	if !filepath.IsAbs(c.Conf) {
		errs = append(errs, fmt.Errorf("--ceph-conf=%q: use an absolute path such as /etc/ceph/ceph.conf", c.Conf))
	}
	if c.Keyring != "" && !filepath.IsAbs(c.Keyring) {
		errs = append(errs, fmt.Errorf("--ceph-keyring=%q: use an absolute path", c.Keyring))
	}
	if c.Pool == "" {
		errs = append(errs, errors.New("--store=rbd needs --rbd-pool: the RBD pool of images and disks (ceph osd pool create POOL; rbd pool init POOL)"))
	}
	if c.MaxCloneDepth < 1 || c.MaxCloneDepth > 64 {
		errs = append(errs, fmt.Errorf("--rbd-max-clone-depth=%d: use 1 to 64", c.MaxCloneDepth))
	}
	return errors.Join(errs...)
}

// storageDomain is the domain of a shared store ("" for one on this host).
func storageDomain(st store.Store) string {
	if d, ok := st.(interface{ Domain() string }); ok {
		return d.Domain()
	}
	return ""
}

// CheckDriver says whether name is a known driver.
func CheckDriver(name string) error {
	_, err := findDriver(name)
	return err
}
