package lio

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/sanboot/sanboot/agent/target"
)

// Snapshot is what LIO's configfs holds, read into the driver's model and
// a little more, for operators (sanboot-agent lio dump). It holds no
// secret: CHAP shows as user names.
type Snapshot struct {
	Root       string
	Targets    []TargetInfo
	Backstores []BackstoreInfo
}

// TargetInfo is one target.
type TargetInfo struct {
	// Target is the target as List reports it, without CHAP secrets.
	Target           target.Target
	TPG              string
	OtherTPGs        []string
	Enabled          bool
	Authentication   string // the portal group's attribute: "1" requires CHAP
	GenerateNodeACLs string // "0": explicit ACLs only
	PortalDirs       []string
	LUNs             []LUNInfo
	ACLs             []ACLInfo
}

// LUNInfo is one LUN of a portal group.
type LUNInfo struct {
	Num       int
	Backstore string // core/<hba>/<name>, "" without a link
}

// ACLInfo is one node ACL.
type ACLInfo struct {
	Initiator  string
	MappedLUNs []int
	// Authentication is the ACL's own attribute: -1 inherits the portal
	// group's.
	Authentication   string
	User, MutualUser string
	// Session is the first line of the session's description, "" when
	// the initiator is not logged in.
	Session string
}

// BackstoreInfo is one backstore.
type BackstoreInfo struct {
	Ref        string // core/<hba>/<name>
	Kind       string // fileio, iblock, ...
	Enabled    bool
	Path       string
	Size       int64
	Serial     string
	EmulateTPU string
	TPWS       string
	// ExportedBy are the targets whose LUNs link to it.
	ExportedBy []string
}

// Snapshot reads everything LIO's configfs holds.
func (d *Driver) Snapshot(ctx context.Context) (*Snapshot, error) {
	if err := d.checkRoot(); err != nil {
		return nil, err
	}
	snap := &Snapshot{Root: d.p.root}
	names, err := d.r.targetNames()
	if err != nil {
		return nil, wrapRead("the targets", err)
	}
	exported := map[backstoreRef][]string{}
	for _, iqn := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t, s, _, ok, err := d.r.readModel(iqn)
		if err != nil {
			return nil, wrapRead("target "+iqn, err)
		}
		if !ok {
			continue
		}
		if t.CHAP != nil { // no secret leaves the driver this way
			c := target.CHAP{Incoming: target.Credentials{User: t.CHAP.Incoming.User}}
			if t.CHAP.Mutual != nil {
				c.Mutual = &target.Credentials{User: t.CHAP.Mutual.User}
			}
			t.CHAP = &c
		}
		ti := TargetInfo{Target: t, TPG: s.TPG, OtherTPGs: s.Others, Enabled: s.Enabled,
			Authentication: s.Authentication, GenerateNodeACLs: s.GenerateNodeACLs}
		for _, p := range s.Portals {
			ti.PortalDirs = append(ti.PortalDirs, p.Dir)
		}
		for _, l := range s.LUNs {
			li := LUNInfo{Num: l.Num}
			if l.Backstore != nil {
				li.Backstore = l.Backstore.String()
				exported[*l.Backstore] = append(exported[*l.Backstore], iqn)
			}
			ti.LUNs = append(ti.LUNs, li)
		}
		for _, a := range s.ACLs {
			ai := ACLInfo{Initiator: a.Initiator, Authentication: a.Authentication, User: a.User, MutualUser: a.MutualUser, Session: a.Session}
			for _, m := range a.Mapped {
				ai.MappedLUNs = append(ai.MappedLUNs, m.Num)
			}
			ti.ACLs = append(ti.ACLs, ai)
		}
		snap.Targets = append(snap.Targets, ti)
	}
	hbas, _, err := d.r.entries(d.p.core())
	if err != nil && !isNotExist(err) {
		return nil, wrapRead("the HBAs", err)
	}
	for _, h := range hbas {
		if _, _, ok := hbaName(h); !ok {
			continue
		}
		devs, _, err := d.r.entries(d.p.hba(h))
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return nil, wrapRead("HBA "+h, err)
		}
		for _, name := range devs {
			ref := backstoreRef{HBA: h, Name: name}
			b, err := d.r.backstore(ref)
			if err != nil {
				return nil, wrapRead("backstore "+ref.String(), err)
			}
			if b == nil {
				continue
			}
			snap.Backstores = append(snap.Backstores, BackstoreInfo{Ref: ref.String(), Kind: ref.kind(), Enabled: b.Enabled,
				Path: b.Path, Size: b.Size, Serial: b.Serial, EmulateTPU: b.EmulateTPU, TPWS: b.TPWS, ExportedBy: exported[ref]})
		}
	}
	return snap, nil
}

// Owned counts the targets and backstores whose name starts with prefix
// (sanboot's: api.DefaultAuthority).
func (s *Snapshot) Owned(prefix string) (targets, backstores int) {
	for _, t := range s.Targets {
		if strings.HasPrefix(t.Target.IQN, prefix) {
			targets++
		}
	}
	for _, b := range s.Backstores {
		if strings.HasPrefix(b.Ref[strings.LastIndexByte(b.Ref, '/')+1:], prefix) {
			backstores++
		}
	}
	return targets, backstores
}

// WriteText prints the snapshot for a person; the last line counts the
// objects whose names start with prefix.
func (s *Snapshot) WriteText(w io.Writer, prefix string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "LIO configfs at %s: %d targets, %d backstores\n", s.Root, len(s.Targets), len(s.Backstores))
	onOff := func(on bool, yes, no string) string {
		if on {
			return yes
		}
		return no
	}
	for _, t := range s.Targets {
		fmt.Fprintf(&b, "\ntarget %s\n", t.Target.IQN)
		fmt.Fprintf(&b, "  %s %s, generate_node_acls=%s, authentication=%s (%s)\n", t.TPG, onOff(t.Enabled, "enabled", "DISABLED"),
			t.GenerateNodeACLs, t.Authentication, onOff(t.Target.CHAP != nil, "CHAP required", "no CHAP"))
		for _, o := range t.OtherTPGs {
			fmt.Fprintf(&b, "  %s (not read: sanboot uses %s)\n", o, t.TPG)
		}
		for _, p := range t.PortalDirs {
			fmt.Fprintf(&b, "  portal %s\n", p)
		}
		for _, l := range t.LUNs {
			bs := l.Backstore
			if bs == "" {
				bs = "(no backstore linked)"
			}
			fmt.Fprintf(&b, "  lun %d -> %s\n", l.Num, bs)
		}
		if t.Target.BackingPath != "" {
			fmt.Fprintf(&b, "  disk %s, %d bytes, serial %s\n", t.Target.BackingPath, t.Target.SizeBytes, t.Target.Serial)
		}
		for _, a := range t.ACLs {
			luns := make([]string, len(a.MappedLUNs))
			for i, n := range a.MappedLUNs {
				luns[i] = strconv.Itoa(n)
			}
			fmt.Fprintf(&b, "  acl %s: mapped luns [%s], authentication=%s", a.Initiator, strings.Join(luns, ","), a.Authentication)
			if a.User != "" {
				fmt.Fprintf(&b, ", chap user %q", a.User)
			}
			if a.MutualUser != "" {
				fmt.Fprintf(&b, ", mutual user %q", a.MutualUser)
			}
			fmt.Fprintf(&b, ", %s\n", onOff(a.Session != "", "logged in ("+a.Session+")", "no session"))
		}
	}
	if len(s.Backstores) > 0 {
		b.WriteString("\n")
	}
	for _, bs := range s.Backstores {
		exp := "not exported"
		if len(bs.ExportedBy) > 0 {
			exp = "exported by " + strings.Join(slices.Sorted(slices.Values(bs.ExportedBy)), ", ")
		}
		fmt.Fprintf(&b, "backstore %s: %s %s, %d bytes, serial %q, %s, emulate_tpu=%s emulate_tpws=%s, %s\n", bs.Ref, bs.Kind, bs.Path,
			bs.Size, bs.Serial, onOff(bs.Enabled, "enabled", "NOT ENABLED"), bs.EmulateTPU, bs.TPWS, exp)
	}
	nt, nb := s.Owned(prefix)
	fmt.Fprintf(&b, "\nsanboot's objects (names starting with %s): %d targets, %d backstores\n", prefix, nt, nb)
	_, err := io.WriteString(w, b.String())
	return err
}
