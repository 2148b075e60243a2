package main

import (
	"flag"

	"github.com/sanboot/sanboot/agent"
	"github.com/sanboot/sanboot/agent/store/rbd"
)

// addCephFlags are the flags of --store=rbd: how the agent reaches its pool.
func addCephFlags(fs *flag.FlagSet, c *agent.Ceph) {
	fs.StringVar(&c.Conf, "ceph-conf", "/etc/ceph/ceph.conf", "with --store=rbd: the Ceph cluster's ceph.conf (monitors, keyring path)")
	fs.StringVar(&c.User, "ceph-user", "sanboot", "with --store=rbd: the agent's cephx user, without \"client.\"; it needs only mon 'profile rbd' osd 'profile rbd pool=POOL'")
	fs.StringVar(&c.Keyring, "ceph-keyring", "", "with --store=rbd: the user's keyring, when ceph.conf does not name it (default: Ceph's search, /etc/ceph/ceph.client.USER.keyring)")
	fs.StringVar(&c.Pool, "rbd-pool", "", "with --store=rbd: the RBD pool of images and disks (required); agents sharing a pool form a storage domain")
	fs.IntVar(&c.MaxCloneDepth, "rbd-max-clone-depth", rbd.DefaultMaxCloneDepth, "with --store=rbd: an image made from a snapshot of a clone is flattened when its chain of parents is longer")
}
