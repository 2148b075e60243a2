package lio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/agent/target/targettest"
	"github.com/sanboot/sanboot/internal/golden"
)

// These tests run the driver against fakeConfigfs: they check the order
// of configfs operations, that a second call writes nothing, that an
// interrupted call is finished by the next, and the EBUSY handling. What
// the kernel does with the result is for kernel_test.go.

func fakeDriver(t testing.TB) (*Driver, *fakeConfigfs) {
	f := newFakeConfigfs(t)
	return newDriver(Config{Root: f.root, Log: testLog(t), BusyTimeout: 5 * time.Second}, f), f
}

func TestFakeConformance(t *testing.T) {
	configfs := map[target.Driver]*fakeConfigfs{}
	targettest.Run(t, func(t *testing.T) target.Driver {
		d, f := fakeDriver(t)
		configfs[d] = f
		return d
	}, targettest.WithLogin(func(t *testing.T, d target.Driver, tg target.Target) func() {
		f := configfs[d]
		f.login(tg.IQN, tg.Initiators[0])
		return func() { f.logout(filepath.Join("iscsi", tg.IQN, tpgName, "acls", tg.Initiators[0])) }
	}))
}

// TestParseACLInfo reads ACL info files in the kernel's format.
func TestParseACLInfo(t *testing.T) {
	for _, tc := range []struct {
		file, name, addr string
	}{
		{"logged-in-ipv4.txt", "iqn.2026-11.io.sanboot:initiator.default.n1", "10.0.2.15"},
		{"logged-in-ipv6.txt", "iqn.2026-11.io.sanboot:initiator.default.n2", "fd00:99::2"},
		{"none.txt", "", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "acl-info", tc.file))
			must(t, err)
			first, name, addr := parseACLInfo(string(b))
			if name != tc.name || addr != tc.addr || (first == "") != (tc.name == "") {
				t.Errorf("parseACLInfo = %q, %q, %q; want a session line, %q, %q", first, name, addr, tc.name, tc.addr)
			}
		})
	}
}

// testTarget returns a target with a backing file in dir.
func testTarget(t testing.TB, dir, name string) target.Target {
	t.Helper()
	p := filepath.Join(dir, name+".raw")
	must(t, os.WriteFile(p, nil, 0o600))
	must(t, os.Truncate(p, 16<<20))
	return target.Target{
		IQN:         "iqn.2026-11.io.sanboot:default." + name,
		BackingPath: p,
		SizeBytes:   16 << 20,
		Initiators:  []string{"iqn.2026-11.io.sanboot:initiator.default." + name},
		Portals:     []string{"10.0.2.15:3260"},
		Serial:      target.Serial("default", name),
	}
}

func withCHAP(tg target.Target, mutual bool) target.Target {
	tg.CHAP = &target.CHAP{Incoming: target.Credentials{User: tg.Initiators[0], Secret: target.NewSecret("incoming-secret-1")}}
	if mutual {
		tg.CHAP.Mutual = &target.Credentials{User: tg.IQN, Secret: target.NewSecret("mutual-secret-01")}
	}
	return tg
}

// TestOperations checks, against golden files, which configfs operations
// each call makes and in which order.
func TestOperations(t *testing.T) {
	type step struct {
		ensure *target.Target
		delete string
	}
	dir := t.TempDir()
	n1 := testTarget(t, dir, "n1")
	n1chap := withCHAP(n1, true)
	n1moved := n1
	n1moved.Initiators = []string{"iqn.2026-11.io.sanboot:initiator.other"}
	n1moved.Portals = []string{"10.0.2.15:3260", "[fd00::1]:3260"}
	n1bigger := n1
	n1bigger.BackingPath = filepath.Join(dir, "n1-bigger.raw")
	n1bigger.SizeBytes = 32 << 20
	must(t, os.WriteFile(n1bigger.BackingPath, nil, 0o600))
	must(t, os.Truncate(n1bigger.BackingPath, 32<<20))

	cases := []struct {
		name  string
		setup []step
		do    step
	}{
		{"ensure-new", nil, step{ensure: &n1}},
		{"ensure-new-mutual-chap", nil, step{ensure: &n1chap}},
		{"ensure-again", []step{{ensure: &n1chap}}, step{ensure: &n1chap}},
		{"chap-off", []step{{ensure: &n1chap}}, step{ensure: &n1}},
		{"chap-on", []step{{ensure: &n1}}, step{ensure: &n1chap}},
		{"acl-and-portals", []step{{ensure: &n1}}, step{ensure: &n1moved}},
		{"backing-changes", []step{{ensure: &n1}}, step{ensure: &n1bigger}},
		{"delete", []step{{ensure: &n1chap}}, step{delete: n1.IQN}},
		{"delete-missing", nil, step{delete: n1.IQN}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, f := fakeDriver(t)
			ctx := context.Background()
			run := func(s step) {
				t.Helper()
				var err error
				if s.ensure != nil {
					err = d.Ensure(ctx, *s.ensure)
				} else {
					err = d.Delete(ctx, s.delete)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range tc.setup {
				run(s)
			}
			f.takeOps()
			run(tc.do)
			got := strings.Join(f.takeOps(), "\n") + "\n"
			got = strings.ReplaceAll(got, dir, "$DIR")
			golden.Check(t, tc.name+".ops", got)
		})
	}
}

// TestSecondEnsureWritesNothing: for every kind of target, an Ensure that
// finds it as wanted only reads (writing 1 to enable twice is EINVAL).
func TestSecondEnsureWritesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, tg := range []target.Target{testTarget(t, dir, "plain"), withCHAP(testTarget(t, dir, "chap"), false),
		withCHAP(testTarget(t, dir, "mutual"), true)} {
		d, f := fakeDriver(t)
		must(t, d.Ensure(context.Background(), tg))
		f.takeOps()
		before := d.Ops()
		must(t, d.Ensure(context.Background(), tg))
		if ops := f.takeOps(); len(ops) > 0 {
			t.Errorf("%s: second Ensure changed %q", tg.IQN, ops)
		}
		if ops := d.Ops().Sub(before); ops.Changes() != 0 || ops.Reads == 0 {
			t.Errorf("%s: second Ensure counted %v", tg.IQN, ops)
		}
	}
}

// TestInterruptedCallsFinish fails each operation of a call in turn (the
// agent dies, configfs refuses), then calls again: the result is the same
// tree as an uninterrupted call's.
func TestInterruptedCallsFinish(t *testing.T) {
	dir := t.TempDir()
	base := withCHAP(testTarget(t, dir, "n1"), true)
	bigger := base
	bigger.BackingPath = filepath.Join(dir, "bigger.raw")
	bigger.SizeBytes = 32 << 20
	must(t, os.WriteFile(bigger.BackingPath, nil, 0o600))
	must(t, os.Truncate(bigger.BackingPath, 32<<20))
	ctx := context.Background()

	type call struct {
		name   string
		before []target.Target
		ensure *target.Target // else Delete(base.IQN)
	}
	for _, c := range []call{
		{"new target", nil, &base},
		{"backing change", []target.Target{base}, &bigger},
		{"delete", []target.Target{base}, nil},
	} {
		// The reference: the call without failure.
		d, f := fakeDriver(t)
		for _, tg := range c.before {
			must(t, d.Ensure(ctx, tg))
		}
		f.takeOps()
		do := func(d *Driver) error {
			if c.ensure != nil {
				return d.Ensure(ctx, *c.ensure)
			}
			return d.Delete(ctx, base.IQN)
		}
		must(t, do(d))
		steps := len(f.takeOps())
		want := strings.ReplaceAll(f.tree(), f.root, "$ROOT")
		if steps == 0 {
			t.Fatalf("%s: no operation", c.name)
		}
		for k := 1; k <= steps; k++ {
			d, f := fakeDriver(t)
			for _, tg := range c.before {
				must(t, d.Ensure(ctx, tg))
			}
			f.takeOps()
			f.failAt = k
			if err := do(d); err == nil {
				t.Errorf("%s: failing operation %d of %d: the call returned nil", c.name, k, steps)
			}
			f.failAt = 0
			if err := do(d); err != nil {
				t.Errorf("%s: after failing operation %d: %v", c.name, k, err)
				continue
			}
			if got := strings.ReplaceAll(f.tree(), f.root, "$ROOT"); got != want {
				t.Errorf("%s: after failing operation %d of %d, the tree differs:\n--- got\n%s--- want\n%s", c.name, k, steps, got, want)
			}
		}
	}
}

// TestEmptyHBAIsReused: an HBA left empty in a target's probe chain is
// where its backstore goes, and Delete removes it; HBAs elsewhere are not
// touched.
func TestEmptyHBAIsReused(t *testing.T) {
	d, f := fakeDriver(t)
	ctx := context.Background()
	tg := testTarget(t, t.TempDir(), "n1")
	home := filepath.Join(f.root, "core", fmt.Sprintf("fileio_%d", hbaHome(tg.IQN)))
	elsewhere := filepath.Join(f.root, "core", fmt.Sprintf("fileio_%d", (hbaHome(tg.IQN)+2)%hbaSpace))
	must(t, f.Mkdir(home))
	must(t, f.Mkdir(elsewhere))
	must(t, d.Ensure(ctx, tg))
	if _, err := os.Stat(filepath.Join(home, tg.IQN)); err != nil {
		t.Errorf("the backstore did not go into the empty HBA: %v\n%s", err, f.tree())
	}
	must(t, d.Delete(ctx, tg.IQN))
	must(t, f.Mkdir(home))
	must(t, d.Delete(ctx, tg.IQN))
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("Delete left the empty HBA of the target's chain: %v", err)
	}
	if _, err := os.Stat(elsewhere); err != nil {
		t.Errorf("Delete removed an empty HBA outside the target's chain: %v", err)
	}
}

// TestBusyIsRetriedAndReported: EBUSY is retried and logged; when it
// lasts, the call fails with ErrBusy and a later call finishes the job.
func TestBusyIsRetriedAndReported(t *testing.T) {
	ctx := context.Background()
	tg := testTarget(t, t.TempDir(), "n1")

	var logs bytes.Buffer
	f := newFakeConfigfs(t)
	d := newDriver(Config{Root: f.root, Log: slog.New(slog.NewTextHandler(&logs, nil)), BusyTimeout: 10 * time.Second}, f)
	must(t, d.Ensure(ctx, tg))
	tpg := filepath.Join("iscsi", tg.IQN, tpgName)
	f.busy[filepath.Join(tpg, "np", "10.0.2.15:3260")] = 3
	must(t, d.Delete(ctx, tg.IQN))
	if !strings.Contains(logs.String(), "configfs says busy") {
		t.Errorf("EBUSY was not reported in the log:\n%s", logs.String())
	}
	if n := strings.Count(strings.Join(f.takeOps(), "\n"), "(EBUSY)"); n != 3 {
		t.Errorf("%d EBUSY answers seen, want 3", n)
	}

	d = newDriver(Config{Root: f.root, Log: testLog(t), BusyTimeout: 50 * time.Millisecond}, f)
	must(t, d.Ensure(ctx, tg))
	f.busy[filepath.Join(tpg, "lun", "lun_0")] = 1 << 30
	err := d.Delete(ctx, tg.IQN)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Delete with a LUN busy for good = %v, want ErrBusy", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, tpg)); err != nil {
		t.Errorf("the portal group went although its LUN could not: %v", err)
	}
	f.busy = map[string]int{}
	must(t, d.Delete(ctx, tg.IQN))
	if got, _ := d.List(ctx); len(got) != 0 {
		t.Errorf("after the second Delete: %v", got)
	}
	if left := f.tree(); strings.Contains(left, "core/fileio") || strings.Contains(left, "io.sanboot") {
		t.Errorf("left behind:\n%s", left)
	}
}

// TestLoggedInKeepsTheDisk: a disk does not change under a logged-in
// node; ACL and CHAP converge all the same.
func TestLoggedInKeepsTheDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, f := fakeDriver(t)
	tg := testTarget(t, dir, "n1")
	must(t, d.Ensure(ctx, tg))
	f.login(tg.IQN, tg.Initiators[0])

	changed := withCHAP(tg, false)
	changed.Serial = "another-serial"
	err := d.Ensure(ctx, changed)
	if !errors.Is(err, ErrLoggedIn) || !strings.Contains(err.Error(), tg.Initiators[0]) {
		t.Fatalf("Ensure of a new serial under a session = %v, want ErrLoggedIn naming the initiator", err)
	}
	got, err := d.List(ctx)
	must(t, err)
	if len(got) != 1 || got[0].Serial != tg.Serial || got[0].CHAP.MutualUser() != "" || got[0].CHAP == nil ||
		got[0].CHAP.Incoming.User != changed.CHAP.Incoming.User {
		t.Errorf("List = %v: want the old serial and the new CHAP", got)
	}
	// Deleting ends the session: disabling the portal group comes first.
	must(t, d.Delete(ctx, tg.IQN))
}

// TestListModel reads a tree the driver did not make.
func TestListModel(t *testing.T) {
	ctx := context.Background()
	d, f := fakeDriver(t)
	tg := withCHAP(testTarget(t, t.TempDir(), "n1"), true)
	must(t, d.Ensure(ctx, tg))
	got, err := d.List(ctx)
	must(t, err)
	if len(got) != 1 || !target.SameConfig(got[0], tg) || got[0].LUN != LUN ||
		!got[0].CHAP.Incoming.Secret.Equal(tg.CHAP.Incoming.Secret) || !got[0].CHAP.Mutual.Secret.Equal(tg.CHAP.Mutual.Secret) {
		t.Fatalf("List = %v, want %v", got, tg)
	}

	// An ACL without its mapped LUN serves nothing: not an initiator.
	acl := filepath.Join(f.root, "iscsi", tg.IQN, tpgName, "acls", tg.Initiators[0], "lun_0")
	must(t, f.Remove(filepath.Join(acl, mapLink)))
	must(t, f.Remove(acl))
	got, _ = d.List(ctx)
	if len(got[0].Initiators) != 0 {
		t.Errorf("an ACL without mapped LUN lists as initiator: %v", got[0])
	}
	must(t, d.Ensure(ctx, tg))
	got, _ = d.List(ctx)
	if !target.SameConfig(got[0], tg) {
		t.Errorf("Ensure did not map the LUN again: %v", got[0])
	}

	// A disabled portal group serves no portal.
	must(t, f.WriteFile(filepath.Join(f.root, "iscsi", tg.IQN, tpgName, "enable"), "0"))
	got, _ = d.List(ctx)
	if len(got[0].Portals) != 0 {
		t.Errorf("a disabled target lists portals: %v", got[0])
	}
}

func TestNoLIO(t *testing.T) {
	d := New(Config{Root: filepath.Join(t.TempDir(), "no-such-dir")})
	tg := testTarget(t, t.TempDir(), "n1")
	if err := d.Ensure(context.Background(), tg); !errors.Is(err, ErrNoLIO) || !strings.Contains(err.Error(), "modprobe") {
		t.Errorf("Ensure without LIO = %v, want ErrNoLIO with what to do", err)
	}
	if _, err := d.List(context.Background()); !errors.Is(err, ErrNoLIO) {
		t.Errorf("List without LIO = %v, want ErrNoLIO", err)
	}
}

func TestBackingChecks(t *testing.T) {
	d, _ := fakeDriver(t)
	dir := t.TempDir()
	tg := testTarget(t, dir, "n1")
	missing := tg
	missing.BackingPath = filepath.Join(dir, "missing.raw")
	if err := d.Ensure(context.Background(), missing); err == nil || !strings.Contains(err.Error(), "store must create it") {
		t.Errorf("missing backing file: %v", err)
	}
	wrongSize := tg
	wrongSize.SizeBytes = 8 << 20
	if err := d.Ensure(context.Background(), wrongSize); err == nil || !strings.Contains(err.Error(), "must agree") {
		t.Errorf("wrong size: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.raw")); err == nil {
		t.Errorf("a missing backing file was created")
	}
	rbd := tg
	rbd.BackingPath = "rbd:sanboot/disk.default.n1"
	if err := d.Ensure(context.Background(), rbd); err == nil || !strings.Contains(err.Error(), "LIO driver cannot serve") ||
		!strings.Contains(err.Error(), "--driver=tgt") {
		t.Errorf("RBD backing: %v, want an error that says LIO cannot serve it and to use --driver=tgt", err)
	}
}

// TestParallelEnsure builds targets in parallel, as the reconciler's
// workers do: each gets its own HBA.
func TestParallelEnsure(t *testing.T) {
	d, f := fakeDriver(t)
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		tg := withCHAP(testTarget(t, dir, fmt.Sprintf("n%02d", i)), i%2 == 0)
		wg.Go(func() { errs <- d.Ensure(context.Background(), tg) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	got, err := d.List(context.Background())
	must(t, err)
	if len(got) != 16 {
		t.Fatalf("List has %d targets, want 16", len(got))
	}
	hbas, _ := os.ReadDir(filepath.Join(f.root, "core"))
	if len(hbas) != 17 { // and alua
		t.Errorf("%d entries in core/, want 16 HBAs and alua", len(hbas))
	}
	// A chain crossing another's: the home index of n00 taken by someone.
	tg := testTarget(t, dir, "crossed")
	taken := filepath.Join(f.root, "core", fmt.Sprintf("iblock_%d", hbaHome(tg.IQN)))
	must(t, f.Mkdir(taken))
	must(t, f.Mkdir(filepath.Join(taken, "someone")))
	must(t, d.Ensure(context.Background(), tg))
	if _, err := os.Stat(filepath.Join(f.root, "core", fmt.Sprintf("fileio_%d", (hbaHome(tg.IQN)+1)%hbaSpace), tg.IQN)); err != nil {
		t.Errorf("with its home index taken, the backstore is not at the next one: %v", err)
	}
}

// TestSnapshot prints what configfs holds, without secrets.
func TestSnapshot(t *testing.T) {
	d, f := fakeDriver(t)
	ctx := context.Background()
	dir := t.TempDir()
	must(t, d.Ensure(ctx, withCHAP(testTarget(t, dir, "n1"), true)))
	must(t, d.Ensure(ctx, testTarget(t, dir, "n2")))
	f.login("iqn.2026-11.io.sanboot:default.n2", "iqn.2026-11.io.sanboot:initiator.default.n2")
	// Someone else's backstore, not exported.
	must(t, f.Mkdir(filepath.Join(f.root, "core", "iblock_7")))
	must(t, f.Mkdir(filepath.Join(f.root, "core", "iblock_7", "spare")))
	snap, err := d.Snapshot(ctx)
	must(t, err)
	var out bytes.Buffer
	must(t, snap.WriteText(&out, "iqn.2026-11.io.sanboot"))
	got := strings.ReplaceAll(strings.ReplaceAll(out.String(), dir, "$DIR"), f.root, "$ROOT")
	for _, secret := range []string{"incoming-secret-1", "mutual-secret-01"} {
		if strings.Contains(got, secret) {
			t.Errorf("the dump shows a secret:\n%s", got)
		}
	}
	golden.Check(t, "snapshot.txt", got)
	if nt, nb := snap.Owned("iqn.2026-11.io.sanboot"); nt != 2 || nb != 2 {
		t.Errorf("Owned = %d targets, %d backstores; want 2, 2", nt, nb)
	}
}

// TestCHAPValuesLIOCannotHold: LIO reads a value starting with "NULL" as
// no value; such a target is refused before anything changes, and the
// error does not quote the secret.
func TestCHAPValuesLIOCannotHold(t *testing.T) {
	d, f := fakeDriver(t)
	tg := withCHAP(testTarget(t, t.TempDir(), "n1"), false)
	tg.CHAP.Incoming.Secret = target.NewSecret("NULLABCDEFGHIJKL")
	err := d.Ensure(context.Background(), tg)
	if err == nil || !strings.Contains(err.Error(), "target.chap.incoming.secret") || strings.Contains(err.Error(), "NULLABCDEFGHIJKL") {
		t.Errorf("Ensure of a secret starting with NULL = %v, want an error naming the field, not the secret", err)
	}
	if ops := f.takeOps(); len(ops) > 0 {
		t.Errorf("the refused Ensure changed %q", ops)
	}
}

// TestReadsStayFlat: what a new target's Ensure and a Sessions call read
// does not grow with the number of targets (an agent rebuilding 500 after
// a reboot must not read core/ or iscsi/ whole for each), and Sessions
// reads the ACLs' info, not the whole portal group.
func TestReadsStayFlat(t *testing.T) {
	d, _ := fakeDriver(t)
	ctx := context.Background()
	dir := t.TempDir()
	cost := func(name string) (ensure, sessions Ops) {
		t.Helper()
		tg := withCHAP(testTarget(t, dir, name), false)
		before := d.Ops()
		must(t, d.Ensure(ctx, tg))
		mid := d.Ops()
		if _, err := d.Sessions(ctx, tg.IQN); err != nil {
			t.Fatal(err)
		}
		return mid.Sub(before), d.Ops().Sub(mid)
	}
	firstEnsure, firstSessions := cost("first")
	for i := range 100 {
		must(t, d.Ensure(ctx, testTarget(t, dir, fmt.Sprintf("n%03d", i))))
	}
	lastEnsure, lastSessions := cost("last")
	// (The first Ensure also makes iscsi/.)
	if firstEnsure.Reads != lastEnsure.Reads || firstEnsure.Entries != lastEnsure.Entries || firstSessions != lastSessions {
		t.Errorf("a new target beside 1 other: Ensure %v, Sessions %v; beside 101: Ensure %v, Sessions %v; want the same reads",
			firstEnsure, firstSessions, lastEnsure, lastSessions)
	}
	// lstat of the root, readdir of the target and of its ACLs, and one
	// info per ACL.
	if lastSessions.Total() != 4 {
		t.Errorf("Sessions of a target with one ACL: %v, want 4 reads", lastSessions)
	}
}
