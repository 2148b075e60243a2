package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/store/filestore"
	"github.com/sanboot/sanboot/agent/store/rbd"
	"github.com/sanboot/sanboot/agent/target/tgt"
)

// Values of --store.
const (
	storeFile = "file"
	storeRBD  = "rbd"
)

// cephConfig is how an agent with --store=rbd reaches its pool.
type cephConfig struct {
	conf, user, keyring, pool string
	maxCloneDepth             int
}

func (c *cephConfig) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.conf, "ceph-conf", "/etc/ceph/ceph.conf", "with --store=rbd: the Ceph cluster's ceph.conf (monitors, keyring path)")
	fs.StringVar(&c.user, "ceph-user", "sanboot", "with --store=rbd: the agent's cephx user, without \"client.\"; it needs only mon 'profile rbd' osd 'profile rbd pool=POOL'")
	fs.StringVar(&c.keyring, "ceph-keyring", "", "with --store=rbd: the user's keyring, when ceph.conf does not name it (default: Ceph's search, /etc/ceph/ceph.client.USER.keyring)")
	fs.StringVar(&c.pool, "rbd-pool", "", "with --store=rbd: the RBD pool of images and disks (required); agents sharing a pool form a storage domain")
	fs.IntVar(&c.maxCloneDepth, "rbd-max-clone-depth", rbd.DefaultMaxCloneDepth, "with --store=rbd: an image made from a snapshot of a clone is flattened when its chain of parents is longer")
}

// tgt is what tgtd's rbd backing store needs (the key stays in the keyring).
func (c cephConfig) tgt() tgt.RBDConfig { return tgt.RBDConfig{Conf: c.conf, User: c.user} }

// validateStore checks --store and what goes with it.
func (c config) validateStore() error {
	switch c.storeKind {
	case storeFile:
		return nil
	case storeRBD:
	default:
		return fmt.Errorf("--store=%q: use file or rbd", c.storeKind)
	}
	var errs []error
	switch c.driver {
	case "lio":
		errs = append(errs, errors.New("--store=rbd with --driver=lio: LIO can serve an RBD image only once the kernel's rbd module maps it, which this agent does not do: use --driver=tgt (tgt's rbd backing store, Debian's tgt-rbd)"))
	case "fake":
		errs = append(errs, errors.New("--store=rbd with --driver=fake: the fake driver has its own in-memory store: use --driver=tgt"))
	}
	if !filepath.IsAbs(c.ceph.conf) {
		errs = append(errs, fmt.Errorf("--ceph-conf=%q: use an absolute path such as /etc/ceph/ceph.conf", c.ceph.conf))
	}
	if c.ceph.keyring != "" && !filepath.IsAbs(c.ceph.keyring) {
		errs = append(errs, fmt.Errorf("--ceph-keyring=%q: use an absolute path", c.ceph.keyring))
	}
	if c.ceph.pool == "" {
		errs = append(errs, errors.New("--store=rbd needs --rbd-pool: the RBD pool of images and disks (ceph osd pool create POOL; rbd pool init POOL)"))
	}
	if c.ceph.maxCloneDepth < 1 || c.ceph.maxCloneDepth > 64 {
		errs = append(errs, fmt.Errorf("--rbd-max-clone-depth=%d: use 1 to 64", c.ceph.maxCloneDepth))
	}
	return errors.Join(errs...)
}

// closableStore is a store the agent releases when it stops.
type closableStore interface {
	store.Store
	Close() error
}

// openStore opens the store --store names. open fetches upload and url
// sources.
func openStore(ctx context.Context, c config, open filestore.Opener, log *slog.Logger) (closableStore, error) {
	if c.storeKind == storeRBD {
		s, err := rbd.New(ctx, rbd.Options{Conf: c.ceph.conf, User: c.ceph.user, Keyring: c.ceph.keyring, Pool: c.ceph.pool,
			Agent: c.name, MaxCloneDepth: c.ceph.maxCloneDepth, Open: rbd.Opener(open), Log: log})
		if err != nil {
			return nil, fmt.Errorf("--store=rbd: %w", err)
		}
		return s, nil
	}
	fs, err := filestore.New(filestore.Options{Root: c.storeDir, Open: open, Log: log})
	if err != nil {
		return nil, fmt.Errorf("open the store in %s: %w", c.storeDir, err)
	}
	return fs, nil
}

// storageDomain is the domain of a shared store ("" for one on this host).
func storageDomain(st store.Store) string {
	if d, ok := st.(interface{ Domain() string }); ok {
		return d.Domain()
	}
	return ""
}
