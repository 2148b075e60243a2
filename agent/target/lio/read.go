package lio

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sanboot/sanboot/agent/target"
)

// tpgState is what configfs holds for one target portal group.
type tpgState struct {
	IQN     string
	Dir     string // absolute path of tpgt_N
	TPG     string // "tpgt_1"
	Others  []string
	Enabled bool
	// Authentication and GenerateNodeACLs are the TPG's attributes as
	// the kernel prints them ("0", "1").
	Authentication   string
	GenerateNodeACLs string
	LUNs             []lunState // by number
	Portals          []portalState
	ACLs             []aclState // by initiator
}

type lunState struct {
	Num   int
	Dir   string
	Links []string // names of the symlinks in the LUN's directory (one, normally)
	// Backstore is what the (first) link points to; nil without a link.
	Backstore *backstoreRef
}

type portalState struct {
	Dir  string // directory name as given when it was made
	Addr netip.AddrPort
}

type aclState struct {
	Initiator string
	Dir       string
	Mapped    []mappedState // by number
	// Authentication is the ACL's attrib/authentication: "-1" (inherit
	// the TPG's), "0", "1"; "" on kernels without it.
	Authentication                             string
	User, Password, MutualUser, MutualPassword string
	// Session is the first line of the ACL's info when an initiator is
	// logged in, "" when none is.
	Session string
	// SessionName and SessionAddress are the logged-in initiator's name
	// and the address of its first connection, from the same info.
	SessionName, SessionAddress string
}

type mappedState struct {
	Num   int
	Dir   string
	Links []string
	// TargetLUN is the TPG LUN the mapped LUN points to, -1 without a link.
	TargetLUN int
}

func (l *lunState) linkTo(b backstoreRef) bool { return l.Backstore != nil && *l.Backstore == b }

func (s *tpgState) lun(n int) *lunState {
	for i := range s.LUNs {
		if s.LUNs[i].Num == n {
			return &s.LUNs[i]
		}
	}
	return nil
}

func (s *tpgState) acl(initiator string) *aclState {
	for i := range s.ACLs {
		if s.ACLs[i].Initiator == initiator {
			return &s.ACLs[i]
		}
	}
	return nil
}

func (a *aclState) mapped(n int) *mappedState {
	for i := range a.Mapped {
		if a.Mapped[i].Num == n {
			return &a.Mapped[i]
		}
	}
	return nil
}

// loggedIn lists the initiators with a session.
func (s *tpgState) loggedIn() []string {
	var who []string
	for _, a := range s.ACLs {
		if a.Session != "" {
			who = append(who, a.Initiator)
		}
	}
	return who
}

// backstoreState is what configfs holds for one backstore.
type backstoreState struct {
	Ref     backstoreRef
	Enabled bool
	// Path is the file (fileio) or device (iblock) it serves.
	Path string
	// Size is the size it presents: fd_dev_size for fileio, the device's
	// size for iblock; -1 when unknown.
	Size       int64
	Serial     string
	EmulateTPU string
	TPWS       string
}

// reader reads configfs. It never changes anything.
type reader struct {
	fs fsys
	p  paths
}

func (r reader) readAttr(p string) (string, error) {
	s, err := r.fs.ReadFile(p)
	return attr(s), err
}

// dirs returns the names of the directories in dir, sorted; and of the
// symlinks when links is set.
func (r reader) entries(dir string) (dirs, links []string, err error) {
	es, err := r.fs.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range es {
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			links = append(links, e.Name())
		case e.IsDir():
			dirs = append(dirs, e.Name())
		}
	}
	slices.Sort(dirs)
	slices.Sort(links)
	return dirs, links, nil
}

// tpgNames finds the target iqn's portal group: tpgt_1, or the lowest
// there is (tpg), and the others. tpg is "" when the target or its portal
// group does not exist.
func (r reader) tpgNames(iqn string) (tpg string, others []string, err error) {
	tdirs, _, err := r.entries(r.p.target(iqn))
	if isNotExist(err) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	var tpgs []string
	for _, d := range tdirs {
		if _, ok := tpgNumber(d); ok {
			tpgs = append(tpgs, d)
		}
	}
	if len(tpgs) == 0 {
		return "", nil, nil
	}
	slices.SortFunc(tpgs, func(a, b string) int {
		na, _ := tpgNumber(a)
		nb, _ := tpgNumber(b)
		return cmp.Compare(na, nb)
	})
	if i := slices.Index(tpgs, tpgName); i > 0 {
		return tpgName, slices.Delete(slices.Clone(tpgs), i, i+1), nil
	}
	return tpgs[0], tpgs[1:], nil
}

// tpg reads the target iqn's portal group (see tpgNames). It returns nil,
// nil when the target or its portal group does not exist.
func (r reader) tpg(iqn string) (*tpgState, error) {
	name, others, err := r.tpgNames(iqn)
	if err != nil || name == "" {
		return nil, err
	}
	s := &tpgState{IQN: iqn, TPG: name, Others: others}
	s.Dir = filepath.Join(r.p.target(iqn), s.TPG)

	en, err := r.readAttr(filepath.Join(s.Dir, "enable"))
	if err != nil {
		return nil, err
	}
	s.Enabled = en == "1"
	if s.Authentication, err = r.readAttr(filepath.Join(s.Dir, "attrib", "authentication")); err != nil {
		return nil, err
	}
	if s.GenerateNodeACLs, err = r.readAttr(filepath.Join(s.Dir, "attrib", "generate_node_acls")); err != nil {
		return nil, err
	}

	luns, _, err := r.entries(filepath.Join(s.Dir, "lun"))
	if err != nil {
		return nil, err
	}
	for _, name := range luns {
		n, ok := lunNumber(name)
		if !ok {
			continue
		}
		l := lunState{Num: n, Dir: filepath.Join(s.Dir, "lun", name)}
		if _, l.Links, err = r.entries(l.Dir); err != nil {
			return nil, err
		}
		if len(l.Links) > 0 {
			target, err := r.fs.Readlink(filepath.Join(l.Dir, l.Links[0]))
			if err != nil {
				return nil, err
			}
			if ref, err := refFromLink(target); err == nil {
				l.Backstore = &ref
			}
		}
		s.LUNs = append(s.LUNs, l)
	}
	slices.SortFunc(s.LUNs, func(a, b lunState) int { return cmp.Compare(a.Num, b.Num) })

	nps, _, err := r.entries(filepath.Join(s.Dir, "np"))
	if err != nil {
		return nil, err
	}
	for _, name := range nps {
		if ap, ok := parsePortalDir(name); ok {
			s.Portals = append(s.Portals, portalState{Dir: name, Addr: ap})
		}
	}

	acls, _, err := r.entries(filepath.Join(s.Dir, "acls"))
	if err != nil {
		return nil, err
	}
	for _, in := range acls {
		a, err := r.acl(filepath.Join(s.Dir, "acls", in), in)
		if err != nil {
			return nil, err
		}
		s.ACLs = append(s.ACLs, a)
	}
	return s, nil
}

// sessions reads who is logged in to the target iqn's portal group: the
// info of each ACL, and nothing else (a node's status lists them after
// every pass; reading the whole portal group would cost five times more).
func (r reader) sessions(iqn string) ([]aclState, error) {
	name, _, err := r.tpgNames(iqn)
	if err != nil || name == "" {
		return nil, err
	}
	dir := filepath.Join(r.p.target(iqn), name, "acls")
	acls, _, err := r.entries(dir)
	if err != nil {
		return nil, err
	}
	out := make([]aclState, 0, len(acls))
	for _, in := range acls {
		a := aclState{Initiator: in, Dir: filepath.Join(dir, in)}
		info, err := r.readAttr(filepath.Join(a.Dir, "info"))
		if err != nil {
			return nil, err
		}
		a.Session, a.SessionName, a.SessionAddress = parseACLInfo(info)
		out = append(out, a)
	}
	return out, nil
}

func (r reader) acl(dir, initiator string) (aclState, error) {
	a := aclState{Initiator: initiator, Dir: dir}
	subdirs, _, err := r.entries(dir)
	if err != nil {
		return a, err
	}
	for _, name := range subdirs {
		n, ok := lunNumber(name)
		if !ok {
			continue
		}
		m := mappedState{Num: n, Dir: filepath.Join(dir, name), TargetLUN: -1}
		if _, m.Links, err = r.entries(m.Dir); err != nil {
			return a, err
		}
		if len(m.Links) > 0 {
			target, err := r.fs.Readlink(filepath.Join(m.Dir, m.Links[0]))
			if err != nil {
				return a, err
			}
			if n, ok := lunNumber(filepath.Base(target)); ok {
				m.TargetLUN = n
			}
		}
		a.Mapped = append(a.Mapped, m)
	}
	slices.SortFunc(a.Mapped, func(x, y mappedState) int { return cmp.Compare(x.Num, y.Num) })
	a.Authentication, err = r.readAttr(filepath.Join(dir, "attrib", "authentication"))
	if isNotExist(err) {
		a.Authentication, err = "", nil
	}
	if err != nil {
		return a, err
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"userid", &a.User}, {"password", &a.Password}, {"userid_mutual", &a.MutualUser}, {"password_mutual", &a.MutualPassword}} {
		v, err := r.readAttr(filepath.Join(dir, "auth", f.name))
		if err != nil {
			return a, err
		}
		if v == unset {
			v = ""
		}
		*f.dst = v
	}
	info, err := r.readAttr(filepath.Join(dir, "info"))
	if err != nil {
		return a, err
	}
	a.Session, a.SessionName, a.SessionAddress = parseACLInfo(info)
	return a, nil
}

// parseACLInfo reads an ACL's info as the kernel prints it
// (lio_target_nacl_info_show): with no session the single line "No active
// iSCSI Session for Initiator Endpoint: IQN", else
//
//	InitiatorName: iqn.1993-08.org.debian:01:ae3d2ec18ad
//	InitiatorAlias: host
//	LIO Session ID: 1   ISID: 0x00 02 3d 00 00 02  TSIH: 1  SessionType: Normal
//	...
//	CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN
//	   Address 192.168.200.50 TCP  StatSN: 0x6916c3e9
//
// It returns the first line ("" without a session), the initiator name
// and the address of the first connection.
func parseACLInfo(info string) (first, name, addr string) {
	first, _, _ = strings.Cut(info, "\n")
	if info == "" || strings.HasPrefix(first, "No active") {
		return "", "", ""
	}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "InitiatorName:"); ok && name == "" {
			name = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Address "); ok && addr == "" {
			if f := strings.Fields(v); len(f) > 0 {
				addr = f[0]
			}
		}
	}
	return strings.TrimSpace(first), name, addr
}

var (
	fileioInfoRe = regexp.MustCompile(`File: (\S+)\s+Size: (\d+)`)
	iblockInfoRe = regexp.MustCompile(`UDEV PATH: (\S+)`)
)

const serialPrefix = "T10 VPD Unit Serial Number:"

// backstore reads one backstore; nil, nil when it does not exist.
func (r reader) backstore(ref backstoreRef) (*backstoreState, error) {
	dir := r.p.backstore(ref)
	b := &backstoreState{Ref: ref, Size: -1}
	en, err := r.readAttr(filepath.Join(dir, "enable"))
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b.Enabled = en == "1"
	info, err := r.readAttr(filepath.Join(dir, "info"))
	if err != nil {
		return nil, err
	}
	switch ref.kind() {
	case kindFileio:
		if m := fileioInfoRe.FindStringSubmatch(info); m != nil {
			b.Path = m[1]
			b.Size, _ = strconv.ParseInt(m[2], 10, 64)
		}
	case kindIblock:
		if m := iblockInfoRe.FindStringSubmatch(info); m != nil {
			b.Path = m[1]
			if b.Enabled {
				b.Size = deviceSize(b.Path)
			}
		}
	}
	serial, err := r.readAttr(filepath.Join(dir, "wwn", "vpd_unit_serial"))
	if err != nil {
		return nil, err
	}
	b.Serial = strings.TrimSpace(strings.TrimPrefix(serial, serialPrefix))
	if b.EmulateTPU, err = r.readAttr(filepath.Join(dir, "attrib", "emulate_tpu")); err != nil {
		return nil, err
	}
	if b.TPWS, err = r.readAttr(filepath.Join(dir, "attrib", "emulate_tpws")); err != nil {
		return nil, err
	}
	return b, nil
}

// deviceSize is the size of a block device, -1 if it cannot be read.
func deviceSize(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return -1
	}
	return n
}

// hbaScan is what HBA directories hold.
type hbaScan struct {
	found []backstoreRef      // the backstores with the name looked for
	empty map[string][]string // kind -> HBA directories with no backstore
	free  int                 // probe: the first index of the chain no HBA uses
}

// hbaSpace is the range of HBA indexes backstores are spread over.
const hbaSpace = 1 << 20

// hbaHome is the HBA index a target's backstore goes to first: FNV-1a of
// the IQN. If an HBA with that index exists, the next index is tried, and
// so on (linear probing), so that the backstore of a target is found again
// by reading a few HBAs, whatever their number.
func hbaHome(iqn string) int {
	h := uint32(2166136261)
	for i := 0; i < len(iqn); i++ {
		h ^= uint32(iqn[i])
		h *= 16777619
	}
	return int(h % hbaSpace)
}

// hbaIndexes reads core/ into index -> HBA directory names.
func (r reader) hbaIndexes() (map[int][]string, error) {
	hbas, _, err := r.entries(r.p.core())
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	byIndex := map[int][]string{}
	for _, h := range hbas {
		if _, n, ok := hbaName(h); ok { // not core/alua
			byIndex[n] = append(byIndex[n], h)
		}
	}
	return byIndex, nil
}

// look reads the HBA directories hbas for backstores named name and for
// empty ones.
func (r reader) look(sc *hbaScan, hbas []string, name string) error {
	for _, h := range hbas {
		devs, _, err := r.entries(r.p.hba(h))
		if isNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if slices.Contains(devs, name) {
			sc.found = append(sc.found, backstoreRef{HBA: h, Name: name})
		}
		if len(devs) == 0 {
			kind, _, _ := hbaName(h)
			sc.empty[kind] = append(sc.empty[kind], h)
		}
	}
	return nil
}

// hbaKinds are the kinds of HBA directory sanboot puts backstores in.
var hbaKinds = []string{kindFileio, kindIblock}

// probeHBAs reads the HBAs of iqn's probe chain: from hbaHome(iqn) up to
// the first index at which no HBA of sanboot's kinds (hbaKinds) exists,
// looked up by name (one lstat per kind), never by reading core/, so that
// it costs the same beside 10 targets or 10,000. It finds the backstore
// named iqn that an interrupted call left behind, and an empty HBA such a
// call left, in a few reads. (A backstore behind a hole that a removed HBA
// left in the chain is missed: scanHBAs finds it.)
func (r reader) probeHBAs(iqn string) (*hbaScan, error) {
	sc := &hbaScan{empty: map[string][]string{}}
	for k := 0; k < hbaSpace; k++ {
		n := (hbaHome(iqn) + k) % hbaSpace
		var hbas []string
		for _, kind := range hbaKinds {
			h := kind + "_" + strconv.Itoa(n)
			_, err := r.fs.Lstat(r.p.hba(h))
			if isNotExist(err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			hbas = append(hbas, h)
		}
		if len(hbas) == 0 {
			sc.free = n
			return sc, nil
		}
		if err := r.look(sc, hbas, iqn); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("every HBA index is taken")
}

// scanHBAs reads every HBA directory for backstores named name (sanboot
// names a target's backstore after the target's IQN) and empty HBAs.
func (r reader) scanHBAs(name string) (*hbaScan, error) {
	sc := &hbaScan{empty: map[string][]string{}}
	byIndex, err := r.hbaIndexes()
	if err != nil {
		return nil, err
	}
	for _, n := range slices.Sorted(maps.Keys(byIndex)) {
		if err := r.look(sc, byIndex[n], name); err != nil {
			return nil, err
		}
	}
	return sc, nil
}

// targetNames lists the target directories in iscsi/.
func (r reader) targetNames() ([]string, error) {
	dirs, _, err := r.entries(r.p.fabric())
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(dirs, func(n string) bool { return !isTargetName(n) }), nil
}

// model turns what configfs holds into the driver's model:
//
//   - LUN, BackingPath, SizeBytes and Serial come from the lowest LUN and
//     its backstore;
//   - Initiators are the ACLs that map that LUN: an ACL without it serves
//     the initiator nothing;
//   - Portals are the portal group's, or none while it is disabled (a
//     disabled portal group serves no portal), so that the reconciler
//     sees a half-built target as different and builds it again;
//   - CHAP is set when the portal group requires authentication, with
//     the users (and secrets) of the first ACL.
func model(s *tpgState, bs *backstoreState) target.Target {
	t := target.Target{IQN: s.IQN, LUN: LUN}
	var lun *lunState
	if len(s.LUNs) > 0 {
		lun = &s.LUNs[0]
		t.LUN = lun.Num
	}
	if bs != nil {
		t.BackingPath, t.SizeBytes, t.Serial = bs.Path, max(bs.Size, 0), bs.Serial
	}
	for _, a := range s.ACLs {
		if lun != nil && slices.ContainsFunc(a.Mapped, func(m mappedState) bool { return m.TargetLUN == lun.Num }) {
			t.Initiators = append(t.Initiators, a.Initiator)
		}
	}
	if s.Enabled {
		for _, p := range s.Portals {
			t.Portals = append(t.Portals, p.Addr.String())
		}
		slices.Sort(t.Portals)
		t.Portals = slices.Compact(t.Portals)
	}
	if authRequired(s) {
		t.CHAP = &target.CHAP{}
		if len(s.ACLs) > 0 {
			a := s.ACLs[0]
			t.CHAP.Incoming = target.Credentials{User: a.User, Secret: target.NewSecret(a.Password)}
			if a.MutualUser != "" {
				t.CHAP.Mutual = &target.Credentials{User: a.MutualUser, Secret: target.NewSecret(a.MutualPassword)}
			}
		}
	}
	return t
}

// authRequired reports whether logins to s need CHAP: the TPG's
// authentication attribute, unless the first ACL overrides it.
func authRequired(s *tpgState) bool {
	if len(s.ACLs) > 0 {
		switch s.ACLs[0].Authentication {
		case "0":
			return false
		case "1":
			return true
		}
	}
	return s.Authentication == "1"
}

// readModel reads one target into the driver's model; ok is false when it
// does not exist (or vanished while being read).
func (r reader) readModel(iqn string) (t target.Target, s *tpgState, bs *backstoreState, ok bool, err error) {
	s, err = r.tpg(iqn)
	if err != nil || s == nil {
		if isNotExist(err) {
			err = nil
		}
		return t, nil, nil, false, err
	}
	if len(s.LUNs) > 0 && s.LUNs[0].Backstore != nil {
		if bs, err = r.backstore(*s.LUNs[0].Backstore); err != nil {
			if isNotExist(err) {
				return t, nil, nil, false, nil
			}
			return t, nil, nil, false, err
		}
	}
	return model(s, bs), s, bs, true, nil
}

func wrapRead(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("read %s from configfs: %w", what, err)
}
