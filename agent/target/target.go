// Package target defines how the agent serves a node's disk over iSCSI: the
// Target it wants (one target, one LUN, a per-node ACL, optional CHAP) and
// the Driver interface that makes a target system (LIO through configfs, tgt
// through tgtadm, or an in-memory fake) match it.
//
// Every Driver must pass the conformance suite in package targettest.
package target

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/api"
)

// Driver makes one iSCSI target system match what the agent wants.
//
// Ensure and Delete are idempotent, so that the reconciler can call them
// again after any failure, restart or reboot. Implementations validate
// every field (Validate) before they change anything.
type Driver interface {
	// Name is the driver's name as given to --driver: "lio", "tgt", "fake".
	Name() string
	// LUN is the number under which the driver exports a target's disk:
	// tgt keeps LUN 0 for its controller and uses 1, LIO uses 0.
	LUN() int
	// Ensure creates the target t or converges an existing one with the
	// same IQN to t (backing file, size, ACL, CHAP, portals, serial).
	// t.LUN is ignored.
	Ensure(ctx context.Context, t Target) error
	// Delete removes the target with this IQN and everything that belongs
	// to it (LUN, ACL, CHAP accounts). Deleting a missing target is not an
	// error. The backing file is never touched.
	Delete(ctx context.Context, iqn string) error
	// List returns every target the system serves, also those sanboot did
	// not create, sorted by IQN, with LUN set. A driver that cannot read
	// CHAP secrets back reports the user names with zero secrets.
	List(ctx context.Context) ([]Target, error)
	// Sessions returns who is logged in to the target with this IQN right
	// now, sorted (SortSessions); none, and no error, when the target does
	// not exist. It only reads.
	Sessions(ctx context.Context, iqn string) ([]Session, error)
}

// SessionReporter is a Driver that tells who is logged in to its targets
// more cheaply than one Sessions call a target: tgt, whose only way to read
// sessions is a listing of every target. The reconciler uses it when the
// driver has it; the conformance suite checks it then.
type SessionReporter interface {
	Driver
	// EnsureSessions is Ensure, and it returns who is logged in to the
	// target as Ensure found it (sorted, SortSessions): what it read to
	// converge an existing target; none for a target it created, whose
	// ACL opens last.
	EnsureSessions(ctx context.Context, t Target) ([]Session, error)
	// ListSessions returns who is logged in to every target, by IQN,
	// each sorted (a target nobody is logged in to may be missing), from
	// one read of the target system.
	ListSessions(ctx context.Context) (map[string][]Session, error)
}

// Namer is implemented by a Driver that can name the targets it serves
// more cheaply than List reads them whole (LIO: one readdir instead of
// some 25 reads per target). The agent's health checks, every few
// seconds, want the names only.
type Namer interface {
	// Names returns the IQN of every target List would return, sorted.
	Names(ctx context.Context) ([]string, error)
}

// Names returns the IQNs of the targets d serves, sorted: through Namer
// when d implements it, else from List.
func Names(ctx context.Context, d Driver) ([]string, error) {
	if n, ok := d.(Namer); ok {
		return n.Names(ctx)
	}
	ts, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.IQN
	}
	return names, nil
}

// Session is one initiator logged in to a target.
type Session struct {
	// Initiator is the name the initiator logged in with (its IQN).
	Initiator string
	// Address is the initiator's IP address (no port); "" when the
	// target system does not say.
	Address string
}

// SortSessions sorts sessions by initiator, then address, and drops
// duplicates (an initiator with several connections from one address).
func SortSessions(s []Session) []Session {
	slices.SortFunc(s, func(a, b Session) int {
		if c := strings.Compare(a.Initiator, b.Initiator); c != 0 {
			return c
		}
		return strings.Compare(a.Address, b.Address)
	})
	return slices.Compact(s)
}

// Target is one iSCSI target serving one disk as one LUN.
type Target struct {
	// IQN is the target's name, e.g. iqn.2026-11.io.sanboot:default.node-01.
	IQN string
	// BackingPath is the absolute path of the file (or block device) the
	// LUN serves, or an RBD image as rbd:POOL/IMAGE (store.RBDPath): only
	// drivers that can open RBD images serve those (tgt's rbd backing
	// store; see RBD).
	BackingPath string
	// SizeBytes is the size of the disk the LUN presents (LIO's fileio
	// backstore needs it; tgt reads it from the file).
	SizeBytes int64
	// Initiators are the initiator IQNs allowed to log in (the ACL). There
	// is always at least one: a sanboot target is never open to everyone.
	Initiators []string
	// CHAP, when set, requires CHAP authentication on login.
	CHAP *CHAP
	// Portals are the ADDR:PORT endpoints the target listens on. A driver
	// whose portals are global (tgt: tgtd --iscsi portal=...) checks that it
	// serves them.
	Portals []string
	// Serial is the SCSI VPD unit serial number (page 0x80) the LUN
	// reports. It must stay the same for a node's disk across agent
	// restarts and reboots, so that the initiator sees the same disk: see
	// Serial.
	Serial string
	// LUN is reported by the driver in List; Ensure ignores it.
	LUN int
}

// Serial returns the deterministic VPD unit serial of a node's disk: 24 hex
// digits of the SHA-256 of "project/node". It fits tgt's 36-character limit
// and LIO's.
func Serial(project, node string) string {
	sum := sha256.Sum256([]byte(project + "/" + node))
	return hex.EncodeToString(sum[:12])
}

// Normalized returns a copy of t with Initiators and Portals sorted and no
// slice shared with t, so that two targets compare field by field.
func (t Target) Normalized() Target {
	t.Initiators = slices.Sorted(slices.Values(t.Initiators))
	t.Portals = slices.Sorted(slices.Values(t.Portals))
	if t.CHAP != nil {
		c := t.CHAP.clone()
		t.CHAP = &c
	}
	return t
}

// SameConfig reports whether a and b describe the same target configuration:
// every field but LUN, with CHAP compared by user names only (drivers may not
// report secrets back), order of Initiators and Portals ignored.
func SameConfig(a, b Target) bool {
	a, b = a.Normalized(), b.Normalized()
	if a.IQN != b.IQN || a.BackingPath != b.BackingPath || a.SizeBytes != b.SizeBytes ||
		a.Serial != b.Serial || !slices.Equal(a.Initiators, b.Initiators) || !slices.Equal(a.Portals, b.Portals) {
		return false
	}
	if (a.CHAP == nil) != (b.CHAP == nil) {
		return false
	}
	if a.CHAP == nil {
		return true
	}
	return a.CHAP.Incoming.User == b.CHAP.Incoming.User && a.CHAP.MutualUser() == b.CHAP.MutualUser()
}

// String describes the target without its CHAP secrets.
func (t Target) String() string {
	chap := "off"
	if t.CHAP != nil {
		chap = t.CHAP.String()
	}
	return fmt.Sprintf("target %s lun %d backing %s (%d bytes) serial %s initiators %v portals %v chap %s",
		t.IQN, t.LUN, t.BackingPath, t.SizeBytes, t.Serial, t.Initiators, t.Portals, chap)
}

// GoString is String, so that %#v prints no secret either.
func (t Target) GoString() string { return t.String() }

// Format prints String for every verb, so that no fmt verb reaches the
// secrets by reflection.
func (t Target) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(t.String())) }

// LogValue logs the target as a group, without CHAP secrets.
func (t Target) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("iqn", t.IQN),
		slog.String("backing", t.BackingPath),
		slog.Int64("size", t.SizeBytes),
		slog.Any("initiators", t.Initiators),
		slog.Any("portals", t.Portals),
		slog.String("serial", t.Serial),
	}
	if t.CHAP != nil {
		attrs = append(attrs, slog.String("chap", t.CHAP.String()))
	}
	return slog.GroupValue(attrs...)
}

// Limits that keep every field usable by both tgtadm (argv) and LIO
// (configfs attribute files).
const (
	maxBackingPath = 255 // LIO fd_dev_name
	maxSerial      = 36  // tgt's scsi_sn
	minSecret      = 12  // RFC 3720 §8.2.1: at least 96 bits
	maxSecret      = 255
	maxUser        = 255
)

var (
	serialRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	userRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]*$`)
)

// Validate checks every field of t and returns all problems at once, each a
// *api.FieldError. Drivers call it before they change anything.
func Validate(t Target) error {
	var errs []error
	errs = append(errs, api.ValidateIQN("target.iqn", t.IQN))
	errs = append(errs, validateBacking(t.BackingPath))
	if t.SizeBytes <= 0 || t.SizeBytes%512 != 0 {
		errs = append(errs, &api.FieldError{Field: "target.sizeBytes", Value: strconv.FormatInt(t.SizeBytes, 10),
			Msg: "must be a positive multiple of 512 bytes"})
	}
	if len(t.Initiators) == 0 {
		errs = append(errs, &api.FieldError{Field: "target.initiators",
			Msg: "needs at least one initiator IQN: a sanboot target is never open to every initiator"})
	}
	seen := map[string]bool{}
	for i, in := range t.Initiators {
		field := "target.initiators[" + strconv.Itoa(i) + "]"
		if err := api.ValidateIQN(field, in); err != nil {
			errs = append(errs, err)
		} else if seen[in] {
			errs = append(errs, &api.FieldError{Field: field, Value: in, Msg: "is listed twice"})
		}
		seen[in] = true
	}
	if len(t.Portals) == 0 {
		errs = append(errs, &api.FieldError{Field: "target.portals", Msg: "needs at least one IP:PORT portal"})
	}
	seen = map[string]bool{}
	for i, p := range t.Portals {
		field := "target.portals[" + strconv.Itoa(i) + "]"
		if err := api.ValidatePortal(field, p); err != nil {
			errs = append(errs, err)
		} else if seen[p] {
			errs = append(errs, &api.FieldError{Field: field, Value: p, Msg: "is listed twice"})
		}
		seen[p] = true
	}
	if t.Serial == "" || len(t.Serial) > maxSerial || !serialRe.MatchString(t.Serial) {
		errs = append(errs, &api.FieldError{Field: "target.serial", Value: t.Serial,
			Msg: fmt.Sprintf("must be 1 to %d characters of A-Z a-z 0-9 . _ -, e.g. target.Serial(project, node)", maxSerial)})
	}
	if t.CHAP != nil {
		errs = append(errs, t.CHAP.validate())
	}
	return errors.Join(errs...)
}

// RBD returns the pool and image of a target whose BackingPath is an RBD
// image (rbd:POOL/IMAGE); ok is false for a file or device path.
func RBD(t Target) (pool, image string, ok bool) { return store.ParseRBDPath(t.BackingPath) }

// rbdNameRe: what tgt's bs_rbd and the rbd tool take as a pool or image name
// (no '/', '@', ';' or spaces).
var rbdNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func validateBacking(p string) error {
	const field = "target.backingPath"
	if strings.HasPrefix(p, store.RBDPathPrefix) {
		pool, image, ok := store.ParseRBDPath(p)
		if !ok || !rbdNameRe.MatchString(pool) || !rbdNameRe.MatchString(image) || len(p) > maxBackingPath {
			return &api.FieldError{Field: field, Value: p, Msg: "must be rbd:POOL/IMAGE, names of A-Z a-z 0-9 . _ - (e.g. rbd:sanboot/disk.default.node-01)"}
		}
		return nil
	}
	switch {
	case p == "":
		return &api.FieldError{Field: field, Msg: "is required: the absolute path of the disk file, or rbd:POOL/IMAGE"}
	case len(p) > maxBackingPath:
		return &api.FieldError{Field: field, Value: p, Msg: fmt.Sprintf("is %d bytes long; at most %d are allowed", len(p), maxBackingPath)}
	case !filepath.IsAbs(p) || filepath.Clean(p) != p:
		return &api.FieldError{Field: field, Value: p, Msg: "must be an absolute, clean path such as /var/lib/sanboot/disks/default/node-01.raw"}
	case strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == ',' || r == 0x7f }):
		return &api.FieldError{Field: field, Value: p, Msg: "must not contain spaces, control characters or commas (LIO's control file splits on them)"}
	}
	return nil
}

// ValidateIQN checks an IQN given to Delete.
func ValidateIQN(iqn string) error { return api.ValidateIQN("target.iqn", iqn) }
