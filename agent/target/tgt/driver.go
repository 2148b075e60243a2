package tgt

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/target"
)

// LUN is the LUN under which tgt exports a target's disk: tgt keeps LUN 0
// for its controller.
const LUN = 1

// Backing store types: plain pread/pwrite on a file or block device, and
// librbd for an RBD image (tgt's bs_rbd.so, Debian's tgt-rbd, which tgtd
// loads when it starts).
const (
	bsType    = "rdwr"
	bsTypeRBD = "rbd"
)

// RBDConfig says how tgtd's rbd backing store reaches the Ceph cluster.
type RBDConfig struct {
	// Conf is the cluster's ceph.conf ("": librbd's default,
	// /etc/ceph/ceph.conf). Its keyring (or Ceph's default keyring path)
	// holds the user's key: the key itself is never put on tgtadm's
	// command line.
	Conf string
	// User is the cephx user without "client." ("": admin).
	User string
}

// bsopts is tgtadm's --bsopts for an RBD LUN ("" for none).
func (c RBDConfig) bsopts() string {
	var o []string
	if c.Conf != "" {
		o = append(o, "conf="+c.Conf)
	}
	if c.User != "" {
		o = append(o, "id="+c.User)
	}
	return strings.Join(o, ";")
}

// Config says which tgtd a Driver talks to.
type Config struct {
	// ControlPort is tgtadm's -C: tgtd's control socket
	// /var/run/tgtd/socket.<ControlPort>. 0 is the default socket, the
	// one of Debian's tgt service.
	ControlPort int
	// Tgtadm, if set, is a tgtadm executable that the driver runs for
	// every request (tests count or fake the calls with it). If empty the
	// driver makes tgtadm's requests itself, on tgtd's control socket:
	// the same requests and answers without a process each.
	Tgtadm string
	// CallTimeout bounds one tgtadm call; 30 s if zero.
	CallTimeout time.Duration
	// Log receives what the driver changes; slog.Default() if nil.
	Log *slog.Logger
	// RBD is used for targets whose BackingPath is rbd:POOL/IMAGE.
	RBD RBDConfig
}

// Driver is a target.Driver for one tgtd. Its methods are safe for
// concurrent use; they run one at a time, since each reads tgtd's
// configuration and then changes it.
//
// CHAP accounts are global in tgtd and their secrets cannot be read back,
// so the driver owns accounts by their bindings:
//
//   - An account bound to the target being changed, and to no other
//     target, belongs to that target: Ensure and Delete unbind and delete
//     it when the target no longer wants it.
//   - An account bound to another target is never touched: a target that
//     asks for that user name fails with an error that names the other
//     target. sanboot's reconciler must therefore give every target its
//     own CHAP user names (for instance the node's initiator IQN for
//     incoming, the target IQN for mutual CHAP).
//   - An account bound to no target is touched only if this Driver value
//     created it (an Ensure that failed between creating and binding it).
//
// Since secrets cannot be read back, the driver remembers an HMAC of every
// secret it set (keyed with a random per-Driver key, never the secret
// itself). An account whose secret it does not know, e.g. after an agent
// restart against a tgtd that kept running, is deleted and created again
// once; while it does so for an incoming account the target's ACL is
// closed, so that no login slips through without CHAP.
type Driver struct {
	adm *tgtadm
	log *slog.Logger
	rbd RBDConfig

	mu       sync.Mutex
	key      []byte
	accounts map[string]account // accounts this driver created or is creating
	// rbdSizes are the byte sizes of the RBD LUNs this driver created, by
	// backing path: tgtd prints sizes in MB and an RBD image has no file
	// to stat.
	rbdSizes map[string]int64
	// listed is what tgtd served at listedAt, with what this driver's
	// successful Ensure calls changed since; nil after any other call or
	// failure. A burst of new targets is made from it (see recent): two
	// tgtadm calls fewer per target.
	listed    *state
	listedAt  time.Time
	listedFor time.Duration // listedFor; tests keep a listing longer
}

// account is what the driver knows about an account it created.
type account struct {
	fp    [sha256.Size]byte // HMAC of the secret
	known bool              // false while "account new" has not succeeded
}

var _ target.SessionReporter = (*Driver)(nil)

// New returns a driver for the tgtd that cfg names. It does not contact
// tgtd; the first call does.
func New(cfg Config) *Driver {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	key := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		panic("tgt: crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	return &Driver{
		adm:       &tgtadm{path: cfg.Tgtadm, controlPort: cfg.ControlPort, timeout: cfg.CallTimeout},
		log:       cfg.Log.With("driver", "tgt", "control_port", cfg.ControlPort),
		key:       key,
		accounts:  map[string]account{},
		rbd:       cfg.RBD,
		rbdSizes:  map[string]int64{},
		listedFor: listedFor,
	}
}

// Name implements target.Driver.
func (d *Driver) Name() string { return "tgt" }

// Requests is how many tgtadm requests this driver has made to tgtd (the
// agent's sanboot_target_requests_total).
func (d *Driver) Requests() uint64 { return d.adm.requests.Load() }

// LUN implements target.Driver.
func (d *Driver) LUN() int { return LUN }

// state is what tgtd serves, read at the start of a call and updated as the
// call changes it.
type state struct {
	targets []tgtTarget
	portals []netip.AddrPort
	// accounts is the set of every account in tgtd, read when CHAP is
	// wanted (nil before).
	accounts map[string]bool
}

func (s *state) byIQN(iqn string) *tgtTarget {
	for i := range s.targets {
		if s.targets[i].IQN == iqn {
			return &s.targets[i]
		}
	}
	return nil
}

// boundElsewhere returns a target other than tid that user is bound to, or nil.
func (s *state) boundElsewhere(user string, tid int) *tgtTarget {
	for i := range s.targets {
		if s.targets[i].TID != tid && s.targets[i].hasAccount(user) {
			return &s.targets[i]
		}
	}
	return nil
}

// freeTID returns the smallest target id no target uses.
func (s *state) freeTID() int {
	used := map[int]bool{}
	for _, t := range s.targets {
		used[t.TID] = true
	}
	tid := 1
	for used[tid] {
		tid++
	}
	return tid
}

func (d *Driver) showTargets(ctx context.Context) ([]tgtTarget, error) {
	out, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "target", "--op", "show")
	if err != nil {
		return nil, err
	}
	return parseTargets(out)
}

func (d *Driver) showPortals(ctx context.Context) ([]netip.AddrPort, error) {
	out, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "portal", "--op", "show")
	if err != nil {
		return nil, err
	}
	return parsePortals(out)
}

func (d *Driver) showAccounts(ctx context.Context) ([]string, error) {
	out, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "account", "--op", "show")
	if err != nil {
		return nil, err
	}
	return parseAccounts(out)
}

func (d *Driver) readState(ctx context.Context) (*state, error) {
	targets, err := d.showTargets(ctx)
	if err != nil {
		return nil, err
	}
	portals, err := d.showPortals(ctx)
	if err != nil {
		return nil, err
	}
	return &state{targets: targets, portals: portals}, nil
}

// Ensure implements target.Driver: it creates the target or converges it,
// in this order: target, LUN 1 (backing file, serial, thin provisioning),
// CHAP accounts, ACL. A new target gets its ACL last, so that nobody can
// log in before the rest is in place.
func (d *Driver) Ensure(ctx context.Context, t target.Target) error {
	_, err := d.EnsureSessions(ctx, t)
	return err
}

// EnsureSessions implements target.SessionReporter: Ensure, and the
// sessions of the target as Ensure found it. An existing target is
// converged from a listing read for it, which has who is logged in; a
// target Ensure created has nobody (its ACL is bound last). No tgtadm call
// is added.
func (d *Driver) EnsureSessions(ctx context.Context, t target.Target) ([]target.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	if err := target.Validate(t); err != nil {
		return nil, fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	if t.CHAP != nil && t.CHAP.Mutual != nil && t.CHAP.Mutual.User == t.CHAP.Incoming.User {
		return nil, fmt.Errorf("ensure target %s: CHAP user %q is both the incoming and the mutual user: tgt keeps one secret per user name, so they must differ",
			t.IQN, t.CHAP.Incoming.User)
	}
	if err := checkBacking(t); err != nil {
		return nil, fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if st := d.recent(); st != nil {
		sessions, err := d.ensure(ctx, t, st)
		if err == nil {
			return sessions, nil
		}
		// What tgtd served a moment ago was not enough (someone else
		// changed it, or the call failed): try again from what it says now.
		d.log.Debug("ensure from the last listing failed; reading tgtd again", "iqn", t.IQN, "err", err)
	}
	return d.ensure(ctx, t, nil)
}

// listedFor is how long Ensure may create a target from the driver's last
// listing of tgtd instead of listing it again.
const listedFor = time.Second

// recent returns the driver's last listing of tgtd, updated with what the
// driver changed since, if it was read less than listedFor ago. d.mu is
// held.
func (d *Driver) recent() *state {
	if d.listed == nil || time.Since(d.listedAt) >= d.listedFor {
		return nil
	}
	return d.listed
}

// ensure makes t so, from st (the recent listing) or, when st is nil or
// does not do, from what tgtd serves now. A listing does for a target
// that is not in it and portals it shows: a new target. An existing one
// is converged from a fresh listing, which has who is logged in now.
// It returns the target's sessions as the listing has them. d.mu is held.
func (d *Driver) ensure(ctx context.Context, t target.Target, st *state) (_ []target.Session, err error) {
	d.listed = nil // until this call succeeds
	if st != nil && (st.byIQN(t.IQN) != nil || checkPortals(t.Portals, st.portals, d.adm.controlPort) != nil) {
		st = nil
	}
	if st == nil {
		if st, err = d.readState(ctx); err != nil {
			return nil, fmt.Errorf("ensure target %s: %w", t.IQN, err)
		}
		d.listedAt = time.Now()
	}
	defer func() {
		if err == nil {
			d.listed = st
		}
	}()
	if err := checkPortals(t.Portals, st.portals, d.adm.controlPort); err != nil {
		return nil, fmt.Errorf("ensure target %s: %w", t.IQN, err)
	}
	tg := st.byIQN(t.IQN)
	if tg != nil {
		// Refuse what cannot be done before changing anything.
		if err := d.checkCHAP(ctx, st, tg, t.CHAP); err != nil {
			return nil, fmt.Errorf("ensure target %s: %w", t.IQN, err)
		}
	} else {
		if err := d.checkCHAP(ctx, st, &tgtTarget{TID: -1}, t.CHAP); err != nil {
			return nil, fmt.Errorf("ensure target %s: %w", t.IQN, err)
		}
		tid := st.freeTID()
		if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "target", "--op", "new",
			"--tid", strconv.Itoa(tid), "--targetname", t.IQN); err != nil {
			return nil, fmt.Errorf("ensure target %s: create it as tid %d: %w", t.IQN, tid, err)
		}
		d.log.Info("created target", "iqn", t.IQN, "tid", tid)
		st.targets = append(st.targets, tgtTarget{TID: tid, IQN: t.IQN})
		tg = &st.targets[len(st.targets)-1]
	}
	// A LUN that cannot change under a logged-in node does not keep CHAP
	// and ACL from converging.
	lunErr := d.convergeLUN(ctx, tg, t)
	var busy *loggedInError
	if lunErr != nil && !errors.As(lunErr, &busy) {
		return nil, fmt.Errorf("ensure target %s (tid %d): %w", t.IQN, tg.TID, lunErr)
	}
	if err := d.convergeCHAP(ctx, st, tg, t.CHAP); err != nil {
		return nil, fmt.Errorf("ensure target %s (tid %d): %w", t.IQN, tg.TID, err)
	}
	if err := d.convergeACL(ctx, tg, t.Initiators); err != nil {
		return nil, fmt.Errorf("ensure target %s (tid %d): %w", t.IQN, tg.TID, err)
	}
	if lunErr != nil {
		return nil, fmt.Errorf("ensure target %s (tid %d): %w", t.IQN, tg.TID, lunErr)
	}
	return tg.sessions(), nil
}

// ErrLoggedIn is returned (wrapped) by Ensure when the target's disk
// (backing file, serial, size, extra LUNs) must change while an initiator is
// logged in. The rest of the target (CHAP, ACL) has converged; the disk
// converges at the first Ensure after the node logs out.
var ErrLoggedIn = errors.New("an initiator is logged in")

// loggedInError says that a LUN cannot change while initiators are logged in.
type loggedInError struct {
	changes []string
	who     string
}

func (e *loggedInError) Error() string {
	return fmt.Sprintf("must change %s, but %s logged in; tgt cannot swap a disk under a logged-in node: "+
		"shut the node down (or log it out) and the next Ensure converges", strings.Join(e.changes, ", "), e.who)
}

func (e *loggedInError) Unwrap() error { return ErrLoggedIn }

// checkBacking checks that the backing file exists and has the size the
// target announces: tgt serves the file's own size.
func checkBacking(t target.Target) error {
	if _, _, ok := target.RBD(t); ok {
		return nil // tgtd opens it: creating the LUN fails when it cannot
	}
	f, err := os.Open(t.BackingPath)
	if err != nil {
		return fmt.Errorf("backing file: %w (the store must create it before the target)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("backing file: %w", err)
	}
	var size int64
	switch {
	case fi.Mode().IsRegular():
		size = fi.Size()
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return fmt.Errorf("backing device %s: size: %w", t.BackingPath, err)
		}
	default:
		return fmt.Errorf("backing path %s is a %v, want a regular file or a block device", t.BackingPath, fi.Mode().Type())
	}
	if size != t.SizeBytes {
		return fmt.Errorf("backing file %s is %d bytes but the target says %d: tgt serves the file's own size, so resize the file (or fix the size) first",
			t.BackingPath, size, t.SizeBytes)
	}
	return nil
}

// checkPortals checks that tgtd listens on every portal in want. tgt's
// portals belong to the whole tgtd (tgtd --iscsi portal=...), not to one
// target; a wildcard portal (0.0.0.0:P, [::]:P) serves every address of its
// family on port P.
func checkPortals(want []string, served []netip.AddrPort, controlPort int) error {
	var missing []string
	for _, p := range want {
		ap, err := netip.ParseAddrPort(p)
		if err != nil {
			return fmt.Errorf("portal %q: %w", p, err) // Validate let it through: cannot happen
		}
		if !servesPortal(served, ap) {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	listening := make([]string, len(served))
	for i, s := range served {
		listening[i] = s.String()
	}
	return fmt.Errorf("tgtd (control port %d) does not serve portal(s) %s; it listens on %v. tgt's portals belong to the whole tgtd: "+
		"start it with --iscsi portal=ADDR:PORT (sanboot-agent --tgtd=managed does), or add one with "+
		"tgtadm -C %d --lld iscsi --mode portal --op new --param portal=ADDR:PORT",
		controlPort, strings.Join(missing, ", "), listening, controlPort)
}

func servesPortal(served []netip.AddrPort, want netip.AddrPort) bool {
	w := want.Addr().Unmap()
	for _, s := range served {
		if s.Port() != want.Port() {
			continue
		}
		a := s.Addr().Unmap()
		if a == w || (a.IsUnspecified() && a.Is4() == w.Is4()) {
			return true
		}
	}
	return false
}

// closeACL unbinds every ACL entry of tg, so that nobody can log in while
// the target changes. The ACL step of Ensure binds the wanted ones again.
func (d *Driver) closeACL(ctx context.Context, tg *tgtTarget) error {
	for len(tg.ACL) > 0 {
		entry := tg.ACL[len(tg.ACL)-1]
		if err := d.unbindACL(ctx, tg.TID, entry); err != nil {
			return err
		}
		tg.ACL = tg.ACL[:len(tg.ACL)-1]
	}
	return nil
}

// convergeLUN makes LUN 1 serve t's backing file with t's serial, thin
// provisioned, and removes every other data LUN. A LUN whose backing file,
// serial or size must change is deleted and created again, which is
// refused while an initiator is logged in.
func (d *Driver) convergeLUN(ctx context.Context, tg *tgtTarget, t target.Target) error {
	bs, path := backing(t)
	l := tg.lun(LUN)
	var why []string
	if l != nil {
		if l.Path != path {
			why = append(why, fmt.Sprintf("backing file %q -> %q", l.Path, path))
		}
		if l.Serial != t.Serial {
			why = append(why, fmt.Sprintf("serial %q -> %q", l.Serial, t.Serial))
		}
		if l.BSType != bs {
			why = append(why, fmt.Sprintf("backing store type %q -> %q", l.BSType, bs))
		}
		if l.SizeMB >= 0 && l.SizeMB != tgtMB(t.SizeBytes) {
			why = append(why, fmt.Sprintf("size %d MB -> %d bytes", l.SizeMB, t.SizeBytes))
		}
	}
	var extra []uint64
	for _, x := range tg.LUNs {
		if x.Num != 0 && x.Num != LUN {
			extra = append(extra, x.Num)
			why = append(why, fmt.Sprintf("remove LUN %d", x.Num))
		}
	}
	if len(why) > 0 {
		if len(tg.Sessions) > 0 {
			return &loggedInError{changes: why, who: loggedIn(tg)}
		}
		for _, n := range extra {
			if err := d.deleteLUN(ctx, tg, n); err != nil {
				return err
			}
		}
		l = tg.lun(LUN) // deleteLUN moved the slice's elements
		if l != nil && len(why) > len(extra) {
			if err := d.deleteLUN(ctx, tg, LUN); err != nil {
				return err
			}
			l = nil
		}
		d.log.Info("recreating LUN", "iqn", tg.IQN, "tid", tg.TID, "changes", why)
	}
	tid := strconv.Itoa(tg.TID)
	if l == nil {
		if err := d.closeACL(ctx, tg); err != nil { // no login before the serial is set
			return err
		}
		args := []string{"--lld", "iscsi", "--mode", "logicalunit", "--op", "new",
			"--tid", tid, "--lun", strconv.Itoa(LUN), "--backing-store", path, "--bstype", bs}
		if o := d.rbd.bsopts(); bs == bsTypeRBD && o != "" {
			args = append(args, "--bsopts", o)
		}
		if _, err := d.adm.run(ctx, nil, args...); err != nil {
			if bs == bsTypeRBD {
				return fmt.Errorf("create LUN %d on RBD image %s: %w (is tgt-rbd installed, and was tgtd started after it? "+
					"can client.%s open the image with %s?)", LUN, path, err, cmp.Or(d.rbd.User, "admin"), cmp.Or(d.rbd.Conf, "/etc/ceph/ceph.conf"))
			}
			return fmt.Errorf("create LUN %d on %s: %w", LUN, t.BackingPath, err)
		}
		tg.LUNs = append(tg.LUNs, lun{Num: LUN, Path: path, BSType: bs, SizeMB: tgtMB(t.SizeBytes)})
		if bs == bsTypeRBD {
			d.rbdSizes[path] = t.SizeBytes
		}
		l = &tg.LUNs[len(tg.LUNs)-1]
	}
	var params []string
	if l.Serial != t.Serial {
		params = append(params, "scsi_sn="+t.Serial)
	}
	if !l.Thin {
		params = append(params, "thin_provisioning=1")
	}
	if len(params) > 0 {
		if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "logicalunit", "--op", "update",
			"--tid", tid, "--lun", strconv.Itoa(LUN), "--params", strings.Join(params, ",")); err != nil {
			return fmt.Errorf("set LUN %d parameters %s: %w", LUN, strings.Join(params, ","), err)
		}
		l.Serial, l.Thin = t.Serial, true
	}
	return nil
}

// backing is the backing store type and tgtadm's --backing-store for t:
// rbd and POOL/IMAGE for an RBD image, rdwr and the path otherwise.
func backing(t target.Target) (bs, path string) {
	if pool, image, ok := target.RBD(t); ok {
		return bsTypeRBD, pool + "/" + image
	}
	return bsType, t.BackingPath
}

func (d *Driver) deleteLUN(ctx context.Context, tg *tgtTarget, n uint64) error {
	_, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "logicalunit", "--op", "delete",
		"--tid", strconv.Itoa(tg.TID), "--lun", strconv.FormatUint(n, 10))
	if err != nil && !said(err, msgNoLUN) {
		return fmt.Errorf("delete LUN %d: %w", n, err)
	}
	tg.LUNs = slices.DeleteFunc(tg.LUNs, func(l lun) bool { return l.Num == n })
	return nil
}

func loggedIn(tg *tgtTarget) string {
	who := tg.initiators()
	if len(who) == 1 {
		return "initiator " + who[0] + " is"
	}
	return "initiators " + strings.Join(who, ", ") + " are"
}

// isInitiatorName tells ACL entries bound with --initiator-name from those
// bound with --initiator-address (ALL, IP, IP/mask): tgtd prints both alike.
func isInitiatorName(entry string) bool {
	return strings.HasPrefix(entry, "iqn.") || strings.HasPrefix(entry, "eui.") || strings.HasPrefix(entry, "naa.")
}

// convergeACL binds exactly want (initiator names): first the missing
// ones, then it unbinds the rest, addresses such as ALL included.
func (d *Driver) convergeACL(ctx context.Context, tg *tgtTarget, want []string) error {
	tid := strconv.Itoa(tg.TID)
	for _, in := range want {
		if slices.Contains(tg.ACL, in) {
			continue
		}
		if _, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "target", "--op", "bind",
			"--tid", tid, "--initiator-name", in); err != nil && !said(err, msgExists) {
			return fmt.Errorf("allow initiator %s: %w", in, err)
		}
		tg.ACL = append(tg.ACL, in)
	}
	for _, entry := range slices.Clone(tg.ACL) {
		if slices.Contains(want, entry) {
			continue
		}
		if err := d.unbindACL(ctx, tg.TID, entry); err != nil {
			return err
		}
		tg.ACL = slices.DeleteFunc(tg.ACL, func(e string) bool { return e == entry })
		d.log.Info("removed ACL entry", "iqn", tg.IQN, "entry", entry)
	}
	return nil
}

// unbindACL removes one ACL entry, trying the kind it looks like first.
func (d *Driver) unbindACL(ctx context.Context, tid int, entry string) error {
	kinds := []string{"--initiator-address", "--initiator-name"}
	if isInitiatorName(entry) {
		kinds[0], kinds[1] = kinds[1], kinds[0]
	}
	for _, kind := range kinds {
		_, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "target", "--op", "unbind",
			"--tid", strconv.Itoa(tid), kind, entry)
		if err == nil {
			return nil
		}
		if !said(err, msgNoACL) {
			return fmt.Errorf("remove ACL entry %s: %w", entry, err)
		}
	}
	return nil // both kinds say it is gone already: what we wanted
}

// Delete implements target.Driver: it closes the ACL, drops the target's
// connections, removes its CHAP accounts (deleting those bound to no other
// target) and deletes the target with --force. Each step leaves the target
// in place until the last, so that a failed Delete can be called again.
func (d *Driver) Delete(ctx context.Context, iqn string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	if err := target.ValidateIQN(iqn); err != nil {
		return fmt.Errorf("delete target: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.listed = nil
	targets, err := d.showTargets(ctx)
	if err != nil {
		return fmt.Errorf("delete target %s: %w", iqn, err)
	}
	st := &state{targets: targets}
	tg := st.byIQN(iqn)
	if tg == nil {
		return nil
	}
	if err := d.deleteTarget(ctx, st, tg); err != nil {
		return fmt.Errorf("delete target %s (tid %d): %w", iqn, tg.TID, err)
	}
	d.log.Info("deleted target", "iqn", iqn, "tid", tg.TID)
	return nil
}

func (d *Driver) deleteTarget(ctx context.Context, st *state, tg *tgtTarget) error {
	if err := d.closeACL(ctx, tg); err != nil {
		return err
	}
	if err := d.removeOutgoing(ctx, st, tg); err != nil {
		return err
	}
	if err := d.removeIncoming(ctx, st, tg, 0); err != nil {
		return err
	}
	return d.forceDelete(ctx, tg)
}

// forceDelete drops every connection of tg and deletes it. tgtd refuses
// while commands are in flight, even with --force, so it tries again for a
// while.
func (d *Driver) forceDelete(ctx context.Context, tg *tgtTarget) error {
	tid := strconv.Itoa(tg.TID)
	for _, s := range tg.Sessions {
		for _, c := range s.Connections {
			_, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "conn", "--op", "delete", "--tid", tid,
				"--sid", strconv.FormatUint(s.ID, 10), "--cid", strconv.FormatUint(uint64(c.ID), 10))
			if err != nil {
				d.log.Warn("could not drop connection; deleting the target anyway", "iqn", tg.IQN, "err", err)
			}
		}
	}
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := d.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "target", "--op", "delete", "--force", "--tid", tid)
		if err == nil || said(err, msgNoTarget) {
			return nil
		}
		if !said(err, msgLUNActive) || attempt == 50 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (while waiting for in-flight commands: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// Sessions implements target.Driver: the I_T nexuses tgtd prints under the
// target (tgtadm --mode target --op show), with the address of each
// session's first connection that has one.
func (d *Driver) Sessions(ctx context.Context, iqn string) ([]target.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sessions of target %s: %w", iqn, err)
	}
	if err := target.ValidateIQN(iqn); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	targets, err := d.showTargets(ctx)
	if err != nil {
		return nil, fmt.Errorf("sessions of target %s: %w", iqn, err)
	}
	tg := (&state{targets: targets}).byIQN(iqn)
	if tg == nil {
		return nil, nil
	}
	return tg.sessions(), nil
}

// ListSessions implements target.SessionReporter: every target's sessions
// from one listing (tgtadm --mode target --op show), as Sessions reads
// them; targets nobody is logged in to are left out.
func (d *Driver) ListSessions(ctx context.Context) (map[string][]target.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	targets, err := d.showTargets(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	out := map[string][]target.Session{}
	for i := range targets {
		if s := targets[i].sessions(); len(s) > 0 {
			out[targets[i].IQN] = s
		}
	}
	return out, nil
}

// List implements target.Driver. Every target gets tgtd's portals; the LUN
// reported is LUN 1 or else the lowest data LUN. SizeBytes is the backing
// file's size when it agrees with the size tgtd prints (which is in MB),
// else tgtd's size in MB times 10^6, so that a file resized under tgtd
// shows as a difference.
func (d *Driver) List(ctx context.Context) ([]target.Target, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.readState(ctx)
	if err != nil {
		return nil, fmt.Errorf("list targets: %w", err)
	}
	portals := make([]string, len(st.portals))
	for i, p := range st.portals {
		portals[i] = p.String()
	}
	slices.Sort(portals)
	portals = slices.Compact(portals)
	out := make([]target.Target, 0, len(st.targets))
	for _, tg := range st.targets {
		t := target.Target{
			IQN:        tg.IQN,
			Initiators: slices.Sorted(slices.Values(tg.ACL)),
			Portals:    slices.Clone(portals),
		}
		if l := dataLUN(&tg); l != nil {
			t.LUN = int(l.Num)
			t.BackingPath = l.Path
			t.Serial = l.Serial
			if l.BSType == bsTypeRBD {
				t.BackingPath = store.RBDPathPrefix + l.Path
				t.SizeBytes = max(l.SizeMB, 0) * 1_000_000
				if size, ok := d.rbdSizes[l.Path]; ok && tgtMB(size) == l.SizeMB {
					t.SizeBytes = size
				}
			} else {
				t.SizeBytes = lunSize(l)
			}
		}
		if len(tg.InAccounts) > 0 {
			t.CHAP = &target.CHAP{Incoming: target.Credentials{User: tg.InAccounts[0]}}
			if tg.OutAccount != "" {
				t.CHAP.Mutual = &target.Credentials{User: tg.OutAccount}
			}
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b target.Target) int { return cmp.Compare(a.IQN, b.IQN) })
	return out, nil
}

func dataLUN(tg *tgtTarget) *lun {
	if l := tg.lun(LUN); l != nil {
		return l
	}
	var best *lun
	for i := range tg.LUNs {
		if l := &tg.LUNs[i]; l.Num != 0 && (best == nil || l.Num < best.Num) {
			best = l
		}
	}
	return best
}

func lunSize(l *lun) int64 {
	if l.Path != "" {
		if fi, err := os.Stat(l.Path); err == nil {
			size := fi.Size()
			if !fi.Mode().IsRegular() {
				if f, err := os.Open(l.Path); err == nil {
					size, _ = f.Seek(0, io.SeekEnd)
					f.Close()
				}
			}
			if l.SizeMB < 0 || tgtMB(size) == l.SizeMB {
				return size
			}
		}
	}
	return max(l.SizeMB, 0) * 1_000_000
}

// fingerprint is an HMAC of a secret under the driver's random key.
func (d *Driver) fingerprint(secret target.Secret) [sha256.Size]byte {
	m := hmac.New(sha256.New, d.key)
	m.Write([]byte(secret.Reveal()))
	var fp [sha256.Size]byte
	copy(fp[:], m.Sum(nil))
	return fp
}
