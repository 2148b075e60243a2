package lio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/api"
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

// Ensure implements target.Driver. For a new target it builds, in this
// order: the backstore (control, enable, VPD unit serial, emulate_tpu and
// emulate_tpws, which the kernel only takes after enable); the target and
// tpgt_1; the portals; LUN 0 linked to the backstore; generate_node_acls=0
// and one ACL per initiator with LUN 0 mapped; the CHAP values on each ACL
// and the authentication attribute; enable, last. For an existing target
// it reads what is there and writes only what differs.
func (d *Driver) Ensure(ctx context.Context, t target.Target) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	if err := target.Validate(t); err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	if err := checkCHAP(t.CHAP); err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	kind, err := checkBacking(t)
	if err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	unlock, err := d.locks.Lock(ctx, t.IQN)
	if err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	defer unlock()
	if err := d.checkRoot(); err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	if err := d.ensure(ctx, t, kind); err != nil {
		return fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	return nil
}

// checkCHAP refuses CHAP values LIO cannot hold: LIO takes any value that
// starts with "NULL" for "no value", and then refuses every login.
func checkCHAP(c *target.CHAP) error {
	if c == nil {
		return nil
	}
	type value struct {
		field, v string
		secret   bool
	}
	vals := []value{{"target.chap.incoming.user", c.Incoming.User, false}, {"target.chap.incoming.secret", c.Incoming.Secret.Reveal(), true}}
	if c.Mutual != nil {
		vals = append(vals, value{"target.chap.mutual.user", c.Mutual.User, false}, value{"target.chap.mutual.secret", c.Mutual.Secret.Reveal(), true})
	}
	var errs []error
	for _, v := range vals {
		if strings.HasPrefix(v.v, unset) {
			fe := &api.FieldError{Field: v.field, Msg: `starts with "NULL", which LIO reads as "no value" (every login would fail): choose another`}
			if !v.secret {
				fe.Value = v.v
			}
			errs = append(errs, fe)
		}
	}
	return errors.Join(errs...)
}

// checkBacking checks that the backing file exists with the size the
// target announces (fileio would create a missing file, and serve
// SizeBytes whatever the file's size), or that it is a block device of
// that size (iblock). It returns the backstore kind.
func checkBacking(t target.Target) (string, error) {
	if _, _, ok := target.RBD(t); ok {
		return "", fmt.Errorf("backing %s is an RBD image, which the LIO driver cannot serve here: LIO needs it mapped as a "+
			"block device by the kernel's rbd module (krbd), which this agent does not do: run the agent with --driver=tgt "+
			"(tgt's rbd backing store, package tgt-rbd) for --store=rbd", t.BackingPath)
	}
	fi, err := os.Stat(t.BackingPath)
	if err != nil {
		return "", fmt.Errorf("backing file: %w (the store must create it before the target)", err)
	}
	switch {
	case fi.Mode().IsRegular():
		if fi.Size() != t.SizeBytes {
			return "", fmt.Errorf("backing file %s has %d bytes, the target announces %d: they must agree", t.BackingPath, fi.Size(), t.SizeBytes)
		}
		return kindFileio, nil
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		if n := deviceSize(t.BackingPath); n != t.SizeBytes {
			return "", fmt.Errorf("block device %s has %d bytes, the target announces %d: they must agree", t.BackingPath, n, t.SizeBytes)
		}
		return kindIblock, nil
	}
	return "", fmt.Errorf("backing path %s is neither a regular file nor a block device (%v)", t.BackingPath, fi.Mode().Type())
}

func (d *Driver) ensure(ctx context.Context, t target.Target, kind string) error {
	// The iscsi fabric's group exists only once something made it: mkdir
	// loads and registers iscsi_target_mod.
	if _, err := d.fs.Lstat(d.p.fabric()); isNotExist(err) {
		if err := d.mkdir(ctx, d.p.fabric()); err != nil {
			return fmt.Errorf("%w (is iscsi_target_mod available?)", err)
		}
	}
	s, err := d.r.tpg(t.IQN)
	if err != nil {
		return wrapRead("the target", err)
	}

	// 1. The backstore: the one LUN 0 links to, or one named after the
	// target that an interrupted call left behind.
	var lun0 *lunState
	if s != nil {
		lun0 = s.lun(LUN)
	}
	var bs *backstoreState
	if lun0 != nil && lun0.Backstore != nil {
		if bs, err = d.r.backstore(*lun0.Backstore); err != nil {
			return wrapRead("the backstore", err)
		}
	}
	// Backstores named after the target that LUN 0 does not serve are
	// spare: one that serves the disk as wanted is taken when LUN 0 has
	// none, the others go. The HBAs of the target's probe chain are read
	// only when LUN 0 does not serve the target's own backstore as wanted.
	var spare []backstoreRef
	var sc *hbaScan
	if bs == nil || bs.Ref.Name != t.IQN || bs.Ref.kind() != kind || !bs.matches(t) {
		if sc, err = d.r.probeHBAs(t.IQN); err != nil {
			return wrapRead("the backstores", err)
		}
		for _, ref := range sc.found {
			if bs != nil && bs.Ref == ref {
				continue
			}
			if bs == nil {
				b, err := d.r.backstore(ref)
				if err != nil {
					return wrapRead("the backstore", err)
				}
				if b != nil && b.Ref.kind() == kind && b.matches(t) {
					bs = b
					continue
				}
			}
			spare = append(spare, ref)
		}
	}
	var diskErr error
	if bs != nil && (bs.Ref.kind() != kind || !bs.matches(t)) {
		if who := loggedIn(s); len(who) > 0 && lun0 != nil && lun0.linkTo(bs.Ref) {
			// Not under a running node; the rest converges.
			diskErr = &loggedInError{changes: bs.differences(t, kind), who: who}
		} else {
			d.log.Info("replacing the backstore", "iqn", t.IQN, "backstore", bs.Ref.String(), "changes", bs.differences(t, kind))
			if lun0 != nil {
				if err := d.removeLUN(ctx, s, lun0); err != nil {
					return err
				}
				lun0 = nil
			}
			if bs.Ref.Name == t.IQN {
				spare = append(spare, bs.Ref)
			}
			bs = nil
		}
	}
	// Spare backstores go first: the new one takes their name (and, read
	// again, their HBA's index).
	for _, ref := range spare {
		if err := d.removeBackstore(ctx, ref); err != nil {
			return err
		}
	}
	if len(spare) > 0 && bs == nil {
		if sc, err = d.r.probeHBAs(t.IQN); err != nil {
			return wrapRead("the HBAs", err)
		}
	}
	if bs == nil {
		ref, err := d.createBackstore(ctx, t, kind, sc)
		if err != nil {
			return err
		}
		bs = &backstoreState{Ref: ref, Enabled: true, EmulateTPU: "1", TPWS: "1"}
	} else if diskErr == nil {
		if err := d.thin(ctx, bs, kind); err != nil {
			return err
		}
	}

	// 2. The target and its portal group.
	if s == nil {
		if err := d.mkdir(ctx, d.p.target(t.IQN)); err != nil {
			return err
		}
		if err := d.mkdir(ctx, d.p.tpg(t.IQN)); err != nil {
			return err
		}
		d.log.Info("created target", "iqn", t.IQN)
		s = &tpgState{IQN: t.IQN, Dir: d.p.tpg(t.IQN), TPG: tpgName}
		// The kernel's defaults (authentication is on) are read, not assumed.
		if s.Authentication, err = d.r.readAttr(filepath.Join(s.Dir, "attrib", "authentication")); err != nil {
			return wrapRead("the new portal group", err)
		}
		if s.GenerateNodeACLs, err = d.r.readAttr(filepath.Join(s.Dir, "attrib", "generate_node_acls")); err != nil {
			return wrapRead("the new portal group", err)
		}
	}

	// 3. Portals: the missing ones, then away with the others.
	want := make([]netip.AddrPort, len(t.Portals))
	for i, p := range t.Portals {
		want[i] = netip.MustParseAddrPort(p) // target.Validate checked them
	}
	for _, ap := range want {
		if slices.ContainsFunc(s.Portals, func(p portalState) bool { return p.Addr == ap }) {
			continue
		}
		if err := d.mkdir(ctx, filepath.Join(s.Dir, "np", portalDir(ap))); err != nil {
			return fmt.Errorf("%w (%s)", err, portalHint(err))
		}
		d.log.Info("added portal", "iqn", t.IQN, "portal", ap.String())
	}
	for _, p := range s.Portals {
		if !slices.Contains(want, p.Addr) {
			if err := d.remove(ctx, filepath.Join(s.Dir, "np", p.Dir)); err != nil {
				return err
			}
			d.log.Info("removed portal", "iqn", t.IQN, "portal", p.Dir)
		}
	}

	// 4. LUN 0 on the backstore; no other LUN.
	lunDir := filepath.Join(s.Dir, "lun", lunDirName(LUN))
	for i := range s.LUNs {
		if l := &s.LUNs[i]; l.Num != LUN {
			if err := d.removeLUN(ctx, s, l); err != nil {
				return err
			}
		}
	}
	if lun0 != nil && !lun0.linkTo(bs.Ref) {
		// A LUN whose backstore goes loses its mapped LUNs in the kernel,
		// while their directories stay: rebuild it whole.
		if err := d.removeLUN(ctx, s, lun0); err != nil {
			return err
		}
		lun0 = nil
	}
	if lun0 == nil {
		if err := d.mkdir(ctx, lunDir); err != nil {
			return err
		}
		if err := d.symlink(ctx, d.p.backstore(bs.Ref), filepath.Join(lunDir, lunLink)); err != nil {
			return err
		}
	}

	// 5. Explicit ACLs only, each with LUN 0 mapped.
	if err := d.setFrom(ctx, filepath.Join(s.Dir, "attrib", "generate_node_acls"), s.GenerateNodeACLs, "0"); err != nil {
		return err
	}
	for _, in := range t.Initiators {
		a := s.acl(in)
		if err := d.ensureACL(ctx, s, a, in, lunDir); err != nil {
			return err
		}
	}
	for i := range s.ACLs {
		if a := &s.ACLs[i]; !slices.Contains(t.Initiators, a.Initiator) {
			if err := d.removeACL(ctx, a); err != nil {
				return err
			}
			d.log.Info("removed ACL", "iqn", t.IQN, "initiator", a.Initiator)
		}
	}

	// 6. Authentication: credentials before requiring them, and no
	// longer required before they go.
	auth := filepath.Join(s.Dir, "attrib", "authentication")
	if t.CHAP != nil {
		for _, in := range t.Initiators {
			if err := d.setCHAP(ctx, s.acl(in), filepath.Join(s.Dir, "acls", in), t.CHAP); err != nil {
				return err
			}
		}
		if err := d.setFrom(ctx, auth, s.Authentication, "1"); err != nil {
			return err
		}
	} else {
		if err := d.setFrom(ctx, auth, s.Authentication, "0"); err != nil {
			return err
		}
		for _, in := range t.Initiators {
			if err := d.setCHAP(ctx, s.acl(in), filepath.Join(s.Dir, "acls", in), nil); err != nil {
				return err
			}
		}
	}

	// 7. Enable, last. Writing 1 to an enabled portal group is EINVAL.
	if !s.Enabled {
		if err := d.write(ctx, filepath.Join(s.Dir, "enable"), "1"); err != nil {
			return err
		}
		d.log.Info("enabled target", "iqn", t.IQN, "backstore", bs.Ref.String(), "portals", t.Portals, "initiators", t.Initiators)
	}
	return diskErr
}

// matches reports whether b serves t's disk as t wants it.
func (b *backstoreState) matches(t target.Target) bool {
	return b.Enabled && b.Path == t.BackingPath && b.Size == t.SizeBytes && b.Serial == t.Serial
}

func (b *backstoreState) differences(t target.Target, kind string) []string {
	var why []string
	if b.Ref.kind() != kind {
		why = append(why, fmt.Sprintf("backstore type %s -> %s", b.Ref.kind(), kind))
	}
	if !b.Enabled {
		why = append(why, "backstore not enabled")
	}
	if b.Path != t.BackingPath {
		why = append(why, fmt.Sprintf("backing %q -> %q", b.Path, t.BackingPath))
	}
	if b.Size != t.SizeBytes {
		why = append(why, fmt.Sprintf("size %d -> %d", b.Size, t.SizeBytes))
	}
	if b.Serial != t.Serial {
		why = append(why, fmt.Sprintf("serial %q -> %q", b.Serial, t.Serial))
	}
	return why
}

func loggedIn(s *tpgState) []string {
	if s == nil {
		return nil
	}
	return s.loggedIn()
}

// loggedInError says that a disk cannot change while initiators are
// logged in.
type loggedInError struct {
	changes []string
	who     []string
}

func (e *loggedInError) Error() string {
	return fmt.Sprintf("must change %s, but %s logged in; the disk is not swapped under a running node: "+
		"shut the node down (or log it out) and the next Ensure converges", strings.Join(e.changes, ", "), strings.Join(e.who, ", "))
}

func (e *loggedInError) Unwrap() error { return ErrLoggedIn }

func portalHint(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return "another program listens on that port"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no interface of this host has that address"
	}
	return "check the agent's --portal addresses"
}

// createBackstore makes the target's backstore in a new HBA directory:
// control, enable, serial, then thin provisioning, which the kernel only
// takes once the backstore is enabled (before, it dereferences a NULL
// pointer: Debian's 6.1 oopses).
func (d *Driver) createBackstore(ctx context.Context, t target.Target, kind string, sc *hbaScan) (backstoreRef, error) {
	hba, err := d.allocHBA(ctx, t.IQN, kind, sc)
	if err != nil {
		return backstoreRef{}, err
	}
	ref := backstoreRef{HBA: hba, Name: t.IQN}
	dir := d.p.backstore(ref)
	if err := d.mkdir(ctx, dir); err != nil {
		return ref, err
	}
	control := "fd_dev_name=" + t.BackingPath + ",fd_dev_size=" + strconv.FormatInt(t.SizeBytes, 10)
	if kind == kindIblock {
		control = "udev_path=" + t.BackingPath
	}
	if err := d.write(ctx, filepath.Join(dir, "control"), control); err != nil {
		return ref, err
	}
	if err := d.write(ctx, filepath.Join(dir, "enable"), "1"); err != nil {
		return ref, err
	}
	if err := d.write(ctx, filepath.Join(dir, "wwn", "vpd_unit_serial"), t.Serial); err != nil {
		return ref, err
	}
	if err := d.thin(ctx, &backstoreState{Ref: ref, EmulateTPU: "0", TPWS: "0"}, kind); err != nil {
		return ref, err
	}
	d.log.Info("created backstore", "iqn", t.IQN, "backstore", ref.String(), "backing", t.BackingPath, "serial", t.Serial)
	return ref, nil
}

// thin turns on UNMAP and WRITE SAME with UNMAP, so that a node's discards
// free space in its clone. A block device that cannot discard keeps
// serving, without thin provisioning.
func (d *Driver) thin(ctx context.Context, b *backstoreState, kind string) error {
	dir := d.p.backstore(b.Ref)
	for _, a := range []struct{ name, cur string }{{"emulate_tpu", b.EmulateTPU}, {"emulate_tpws", b.TPWS}} {
		if a.cur == "1" {
			continue
		}
		err := d.write(ctx, filepath.Join(dir, "attrib", a.name), "1")
		if err != nil && kind == kindIblock && !errors.Is(err, ErrBusy) && ctx.Err() == nil {
			d.log.Warn("the block device cannot discard: serving it without thin provisioning", "backstore", b.Ref.String(), "attribute", a.name, "err", err)
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// allocHBA returns an HBA directory of kind for the target's backstore: an
// empty one in the target's probe chain (an interrupted call left it), or
// a new one, <kind>_<N> with N the first free index of the chain. sc is
// the caller's probe.
func (d *Driver) allocHBA(ctx context.Context, iqn, kind string, sc *hbaScan) (string, error) {
	for attempt := 0; attempt < 100; attempt++ {
		if len(sc.empty[kind]) > 0 {
			return sc.empty[kind][0], nil
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
		name := kind + "_" + strconv.Itoa(sc.free)
		err := d.fs.Mkdir(d.p.hba(name))
		if err == nil {
			return name, nil
		}
		if !isExist(err) {
			return "", fmt.Errorf("mkdir %s: %w", d.p.hba(name), err)
		}
		// Taken meanwhile (a parallel call whose chain crosses ours): read
		// the chain again.
		if sc, err = d.r.probeHBAs(iqn); err != nil {
			return "", wrapRead("the HBAs", err)
		}
	}
	return "", errors.New("no free HBA index after 100 attempts")
}

// ensureACL makes the initiator's ACL with LUN 0 mapped, and nothing else
// mapped. The ACL inherits the portal group's authentication setting.
func (d *Driver) ensureACL(ctx context.Context, s *tpgState, a *aclState, in, lunDir string) error {
	dir := filepath.Join(s.Dir, "acls", in)
	if a == nil {
		if err := d.mkdir(ctx, dir); err != nil {
			return err
		}
		d.log.Info("added ACL", "iqn", s.IQN, "initiator", in)
		a = &aclState{Initiator: in, Dir: dir}
		var err error
		if a.Authentication, err = d.r.readAttr(filepath.Join(dir, "attrib", "authentication")); isNotExist(err) {
			a.Authentication = "" // a kernel without per-ACL authentication
		} else if err != nil {
			return wrapRead("the new ACL", err)
		}
	}
	for i := range a.Mapped {
		if m := &a.Mapped[i]; m.Num != LUN {
			if err := d.removeMapped(ctx, m); err != nil {
				return err
			}
		}
	}
	m := a.mapped(LUN)
	mdir := filepath.Join(dir, lunDirName(LUN))
	if m == nil {
		if err := d.mkdir(ctx, mdir); err != nil {
			return err
		}
	}
	if m == nil || m.TargetLUN != LUN {
		if m != nil {
			for _, l := range m.Links {
				if err := d.remove(ctx, filepath.Join(mdir, l)); err != nil {
					return err
				}
			}
		}
		if err := d.symlink(ctx, lunDir, filepath.Join(mdir, mapLink)); err != nil {
			return err
		}
	}
	if a.Authentication != "" && a.Authentication != "-1" {
		if err := d.write(ctx, filepath.Join(dir, "attrib", "authentication"), "-1"); err != nil {
			return err
		}
	}
	return nil
}

// setCHAP writes the ACL's CHAP values (c nil: forgets them). Values go
// without a trailing newline: LIO would keep it as part of the secret.
// Secrets never appear in errors or logs.
func (d *Driver) setCHAP(ctx context.Context, a *aclState, dir string, c *target.CHAP) error {
	var cur aclState
	if a != nil {
		cur = *a
	}
	want := aclState{}
	if c != nil {
		want.User, want.Password = c.Incoming.User, c.Incoming.Secret.Reveal()
		if c.Mutual != nil {
			want.MutualUser, want.MutualPassword = c.Mutual.User, c.Mutual.Secret.Reveal()
		}
	}
	for _, f := range []struct {
		name      string
		cur, want string
		secret    bool
	}{
		{"userid", cur.User, want.User, false},
		{"password", cur.Password, want.Password, true},
		{"userid_mutual", cur.MutualUser, want.MutualUser, false},
		{"password_mutual", cur.MutualPassword, want.MutualPassword, true},
	} {
		if f.cur == f.want {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		v := f.want
		if v == "" {
			v = unset
		}
		p := filepath.Join(dir, "auth", f.name)
		if err := d.retryBusy(ctx, "write "+p, func() error { return d.fs.WriteFile(p, v) }); err != nil {
			if f.secret {
				return fmt.Errorf("write the CHAP secret to %s: %w", p, redact(err, f.want))
			}
			return fmt.Errorf("write %q to %s: %w", v, p, err)
		}
	}
	return nil
}

// redact removes secret from err's text.
func redact(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, "[redacted]"))
}

// Delete implements target.Driver: disable the portal group (which ends
// its sessions), then remove mapped LUNs, ACLs, LUNs, portals, the portal
// group, the target, and the backstores named after the target with their
// HBA directories. Each step leaves the rest in place, so that a failed
// Delete can be called again. The backing file is never touched.
func (d *Driver) Delete(ctx context.Context, iqn string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	if err := target.ValidateIQN(iqn); err != nil {
		return fmt.Errorf("delete target: %w", err)
	}
	unlock, err := d.locks.Lock(ctx, iqn)
	if err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	defer unlock()
	if err := d.checkRoot(); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	if err := d.delete(ctx, iqn); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	return nil
}

func (d *Driver) delete(ctx context.Context, iqn string) error {
	var linked []backstoreRef
	existed := false
	for {
		s, err := d.r.tpg(iqn)
		if err != nil {
			return wrapRead("the target", err)
		}
		if s == nil {
			break
		}
		existed = true
		for _, l := range s.LUNs {
			if l.Backstore != nil {
				linked = append(linked, *l.Backstore)
			}
		}
		if err := d.removeTPG(ctx, s); err != nil {
			return err
		}
		if len(s.Others) == 0 {
			break
		}
	}
	if err := d.remove(ctx, d.p.target(iqn)); err != nil {
		return err
	}
	sc, err := d.r.scanHBAs(iqn)
	if err != nil {
		return wrapRead("the backstores", err)
	}
	for _, ref := range linked {
		if ref.Name != iqn {
			d.log.Info("kept a backstore sanboot did not name: it may serve others", "iqn", iqn, "backstore", ref.String())
		}
	}
	for _, ref := range sc.found {
		if err := d.removeBackstore(ctx, ref); err != nil {
			return err
		}
		existed = true
	}
	// An empty HBA in the target's probe chain is one an interrupted call
	// left between removing the backstore and its HBA.
	chain, err := d.r.probeHBAs(iqn)
	if err != nil {
		return wrapRead("the HBAs", err)
	}
	for _, hbas := range chain.empty {
		for _, h := range hbas {
			if err := d.remove(ctx, d.p.hba(h)); err != nil && !errors.Is(err, syscall.ENOTEMPTY) {
				return err
			}
		}
	}
	if existed {
		d.log.Info("deleted target", "iqn", iqn)
	}
	return nil
}

// removeTPG tears one portal group down in reverse order of building it.
func (d *Driver) removeTPG(ctx context.Context, s *tpgState) error {
	if s.Enabled {
		if err := d.write(ctx, filepath.Join(s.Dir, "enable"), "0"); err != nil {
			return err
		}
	}
	for i := range s.ACLs {
		for j := range s.ACLs[i].Mapped {
			if err := d.removeMapped(ctx, &s.ACLs[i].Mapped[j]); err != nil {
				return err
			}
		}
	}
	for i := range s.ACLs {
		if err := d.remove(ctx, s.ACLs[i].Dir); err != nil {
			return err
		}
	}
	for i := range s.LUNs {
		if err := d.removeLUNDir(ctx, &s.LUNs[i]); err != nil {
			return err
		}
	}
	for _, p := range s.Portals {
		if err := d.remove(ctx, filepath.Join(s.Dir, "np", p.Dir)); err != nil {
			return err
		}
	}
	return d.remove(ctx, s.Dir)
}

// removeLUN removes a LUN of the portal group: first every ACL's mapped
// LUN that points to it (the kernel refuses with EBUSY otherwise), then
// its link to the backstore and its directory.
func (d *Driver) removeLUN(ctx context.Context, s *tpgState, l *lunState) error {
	for i := range s.ACLs {
		for j := range s.ACLs[i].Mapped {
			if m := &s.ACLs[i].Mapped[j]; m.TargetLUN == l.Num || m.TargetLUN == -1 {
				if err := d.removeMapped(ctx, m); err != nil {
					return err
				}
			}
		}
		s.ACLs[i].Mapped = slices.DeleteFunc(s.ACLs[i].Mapped, func(m mappedState) bool { return m.TargetLUN == l.Num || m.TargetLUN == -1 })
	}
	return d.removeLUNDir(ctx, l)
}

func (d *Driver) removeLUNDir(ctx context.Context, l *lunState) error {
	for _, link := range l.Links {
		if err := d.remove(ctx, filepath.Join(l.Dir, link)); err != nil {
			return err
		}
	}
	return d.remove(ctx, l.Dir)
}

func (d *Driver) removeMapped(ctx context.Context, m *mappedState) error {
	for _, link := range m.Links {
		if err := d.remove(ctx, filepath.Join(m.Dir, link)); err != nil {
			return err
		}
	}
	return d.remove(ctx, m.Dir)
}

// removeACL removes an ACL and its mapped LUNs; the kernel ends the
// initiator's session.
func (d *Driver) removeACL(ctx context.Context, a *aclState) error {
	for i := range a.Mapped {
		if err := d.removeMapped(ctx, &a.Mapped[i]); err != nil {
			return err
		}
	}
	return d.remove(ctx, a.Dir)
}

// removeBackstore removes a backstore and then its HBA directory, if no
// other backstore is in it.
func (d *Driver) removeBackstore(ctx context.Context, ref backstoreRef) error {
	if err := d.remove(ctx, d.p.backstore(ref)); err != nil {
		return err
	}
	d.log.Info("removed backstore", "backstore", ref.String())
	others, _, err := d.r.entries(d.p.hba(ref.HBA))
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return wrapRead("the HBA", err)
	}
	if len(others) > 0 {
		return nil
	}
	err = d.remove(ctx, d.p.hba(ref.HBA))
	if errors.Is(err, syscall.ENOTEMPTY) {
		return nil // another backstore arrived meanwhile
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
	s, err := d.r.tpg(iqn)
	if isNotExist(err) || err == nil && s == nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sessions of target %s: %w", iqn, wrapRead("the target", err))
	}
	var out []target.Session
	for _, a := range s.ACLs {
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

// List implements target.Driver: every target in configfs, in the
// driver's model (see model).
func (d *Driver) List(ctx context.Context) ([]target.Target, error) {
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

// mkdir makes a configfs directory; one that exists is fine.
func (d *Driver) mkdir(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.fs.Mkdir(p); err != nil && !isExist(err) {
		return fmt.Errorf("mkdir %s: %w", p, err)
	}
	return nil
}

// remove removes a configfs directory or symlink; one that is gone is
// fine. EBUSY is retried (see retryBusy).
func (d *Driver) remove(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := d.retryBusy(ctx, "remove "+p, func() error { return d.fs.Remove(p) })
	if err != nil && !isNotExist(err) {
		return err
	}
	return nil
}

func (d *Driver) symlink(ctx context.Context, target, link string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.fs.Symlink(target, link); err != nil {
		return fmt.Errorf("symlink %s -> %s: %w", link, target, err)
	}
	return nil
}

// write writes value to the attribute p.
func (d *Driver) write(ctx context.Context, p, value string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.retryBusy(ctx, "write "+p, func() error { return d.fs.WriteFile(p, value) }); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, p, err)
	}
	return nil
}

// setFrom writes value to the attribute p unless cur, what p held when
// it was read, is value already: only what differs is written, and some
// attributes refuse a second write of the same value (enable).
func (d *Driver) setFrom(ctx context.Context, p, cur, value string) error {
	if cur == value {
		return nil
	}
	return d.write(ctx, p, value)
}

// retryBusy runs f until it does not fail with EBUSY, for at most
// busyTimeout. EBUSY is never ignored: it is logged when first seen, and
// when it lasts the call fails with ErrBusy.
func (d *Driver) retryBusy(ctx context.Context, what string, f func() error) error {
	deadline := time.Now().Add(d.busyTimeout)
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !isBusy(err) {
			return err
		}
		if attempt == 1 {
			d.log.Warn("configfs says busy (a live session, a command in flight, or a link to the object); retrying",
				"op", what, "err", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s: still busy after %d attempts in %v: %v; an initiator may still be logged in "+
				"or another object links to it: log the node out (or remove the link); the agent retries", ErrBusy, what, attempt, d.busyTimeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (configfs said busy: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
