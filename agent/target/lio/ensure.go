package lio

import (
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

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/api"
)

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

// ensure makes configfs serve t, in numbered steps; a step reads what the
// earlier ones left in s. The disk's error (ErrLoggedIn) comes last, after
// the rest has converged.
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
	disk, err := d.ensureBackstore(ctx, t, kind, s) // 1
	if err != nil {
		return err
	}
	if s, err = d.ensureTPG(ctx, t, s); err != nil { // 2
		return err
	}
	if err := d.ensurePortals(ctx, t, s); err != nil { // 3
		return err
	}
	lunDir, err := d.ensureLUN(ctx, s, disk) // 4
	if err != nil {
		return err
	}
	if err := d.ensureACLs(ctx, t, s, lunDir); err != nil { // 5
		return err
	}
	if err := d.ensureAuth(ctx, t, s); err != nil { // 6
		return err
	}
	if err := d.enable(ctx, t, s, disk.bs); err != nil { // 7
		return err
	}
	return disk.err
}

// disk is what step 1 leaves for the others: the backstore LUN 0 is to
// link to, LUN 0 as it is (nil once removed), and ErrLoggedIn when the
// disk had to change under a logged-in node.
type disk struct {
	bs   *backstoreState
	lun0 *lunState
	err  error
}

// ensureBackstore is step 1. The backstore: the one LUN 0 links to, or one
// named after the target that an interrupted call left behind.
func (d *Driver) ensureBackstore(ctx context.Context, t target.Target, kind string, s *tpgState) (disk, error) {
	var lun0 *lunState
	if s != nil {
		lun0 = s.lun(LUN)
	}
	var bs *backstoreState
	var err error
	if lun0 != nil && lun0.Backstore != nil {
		if bs, err = d.r.backstore(*lun0.Backstore); err != nil {
			return disk{}, wrapRead("the backstore", err)
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
			return disk{}, wrapRead("the backstores", err)
		}
		for _, ref := range sc.found {
			if bs != nil && bs.Ref == ref {
				continue
			}
			if bs == nil {
				b, err := d.r.backstore(ref)
				if err != nil {
					return disk{}, wrapRead("the backstore", err)
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
					return disk{}, err
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
			return disk{}, err
		}
	}
	if len(spare) > 0 && bs == nil {
		if sc, err = d.r.probeHBAs(t.IQN); err != nil {
			return disk{}, wrapRead("the HBAs", err)
		}
	}
	if bs == nil {
		ref, err := d.createBackstore(ctx, t, kind, sc)
		if err != nil {
			return disk{}, err
		}
		bs = &backstoreState{Ref: ref, Enabled: true, EmulateTPU: "1", TPWS: "1"}
	} else if diskErr == nil {
		if err := d.thin(ctx, bs, kind); err != nil {
			return disk{}, err
		}
	}
	return disk{bs: bs, lun0: lun0, err: diskErr}, nil
}

// ensureTPG is step 2: the target and its portal group. It returns the
// portal group's state (s, or the new one's).
func (d *Driver) ensureTPG(ctx context.Context, t target.Target, s *tpgState) (*tpgState, error) {
	if s != nil {
		return s, nil
	}
	if err := d.mkdir(ctx, d.p.target(t.IQN)); err != nil {
		return nil, err
	}
	if err := d.mkdir(ctx, d.p.tpg(t.IQN)); err != nil {
		return nil, err
	}
	d.log.Debug("created target", "iqn", t.IQN)
	s = &tpgState{IQN: t.IQN, Dir: d.p.tpg(t.IQN), TPG: tpgName}
	// The kernel's defaults (authentication is on) are read, not assumed.
	var err error
	if s.Authentication, err = d.r.readAttr(filepath.Join(s.Dir, "attrib", "authentication")); err != nil {
		return nil, wrapRead("the new portal group", err)
	}
	if s.GenerateNodeACLs, err = d.r.readAttr(filepath.Join(s.Dir, "attrib", "generate_node_acls")); err != nil {
		return nil, wrapRead("the new portal group", err)
	}
	return s, nil
}

// ensurePortals is step 3: the missing portals, then away with the others.
func (d *Driver) ensurePortals(ctx context.Context, t target.Target, s *tpgState) error {
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
		d.log.Log(ctx, changeLevel(s), "added portal", "iqn", t.IQN, "portal", ap.String())
	}
	for _, p := range s.Portals {
		if !slices.Contains(want, p.Addr) {
			if err := d.remove(ctx, filepath.Join(s.Dir, "np", p.Dir)); err != nil {
				return err
			}
			d.log.Info("removed portal", "iqn", t.IQN, "portal", p.Dir)
		}
	}
	return nil
}

// ensureLUN is step 4: LUN 0 on the backstore; no other LUN. It returns
// LUN 0's directory.
func (d *Driver) ensureLUN(ctx context.Context, s *tpgState, disk disk) (string, error) {
	lunDir := filepath.Join(s.Dir, "lun", lunDirName(LUN))
	for i := range s.LUNs {
		if l := &s.LUNs[i]; l.Num != LUN {
			if err := d.removeLUN(ctx, s, l); err != nil {
				return "", err
			}
		}
	}
	lun0 := disk.lun0
	if lun0 != nil && !lun0.linkTo(disk.bs.Ref) {
		// A LUN whose backstore goes loses its mapped LUNs in the kernel,
		// while their directories stay: rebuild it whole.
		if err := d.removeLUN(ctx, s, lun0); err != nil {
			return "", err
		}
		lun0 = nil
	}
	if lun0 == nil {
		if err := d.mkdir(ctx, lunDir); err != nil {
			return "", err
		}
		if err := d.symlink(ctx, d.p.backstore(disk.bs.Ref), filepath.Join(lunDir, lunLink)); err != nil {
			return "", err
		}
	}
	return lunDir, nil
}

// ensureACLs is step 5: explicit ACLs only, each with LUN 0 mapped.
func (d *Driver) ensureACLs(ctx context.Context, t target.Target, s *tpgState, lunDir string) error {
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
	return nil
}

// ensureAuth is step 6: authentication, credentials before requiring
// them, and no longer required before they go.
func (d *Driver) ensureAuth(ctx context.Context, t target.Target, s *tpgState) error {
	auth := filepath.Join(s.Dir, "attrib", "authentication")
	if t.CHAP != nil {
		for _, in := range t.Initiators {
			if err := d.setCHAP(ctx, s.acl(in), filepath.Join(s.Dir, "acls", in), t.CHAP); err != nil {
				return err
			}
		}
		return d.setFrom(ctx, auth, s.Authentication, "1")
	}
	if err := d.setFrom(ctx, auth, s.Authentication, "0"); err != nil {
		return err
	}
	for _, in := range t.Initiators {
		if err := d.setCHAP(ctx, s.acl(in), filepath.Join(s.Dir, "acls", in), nil); err != nil {
			return err
		}
	}
	return nil
}

// enable is step 7, last. Writing 1 to an enabled portal group is EINVAL.
func (d *Driver) enable(ctx context.Context, t target.Target, s *tpgState, bs *backstoreState) error {
	if s.Enabled {
		return nil
	}
	if err := d.write(ctx, filepath.Join(s.Dir, "enable"), "1"); err != nil {
		return err
	}
	d.log.Info("enabled target", "iqn", t.IQN, "backstore", bs.Ref.String(), "backing", t.BackingPath, "serial", t.Serial,
		"portals", t.Portals, "initiators", t.Initiators, "chap", t.CHAP != nil)
	return nil
}

// changeLevel is the level of a step's log line: Info for a change to a
// target that serves (rare, and worth reading), Debug for a step of
// building one, which "enabled target" sums up at Info. Five lines at
// Info per target made logging a tenth of an agent's work when it
// rebuilt 500 targets after a reboot.
func changeLevel(s *tpgState) slog.Level {
	if s.Enabled {
		return slog.LevelInfo
	}
	return slog.LevelDebug
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
	d.log.Debug("created backstore", "iqn", t.IQN, "backstore", ref.String(), "backing", t.BackingPath, "serial", t.Serial)
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
		d.log.Log(ctx, changeLevel(s), "added ACL", "iqn", s.IQN, "initiator", in)
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
