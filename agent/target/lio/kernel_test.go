package lio

// Tests and benchmarks against a real LIO. The host kernel of the
// project's machines has no LIO, so they run in a VM with a stock Debian
// kernel: hack/e2e-lio.sh builds this package's test binary statically,
// boots it with the target modules and sets SANBOOT_LIO_CONFIGFS. They
// skip anywhere else; the fake-configfs tests in driver_test.go
// supplement them, they do not replace them.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/agent/target/targettest"
)

const kernelPrefix = "iqn.2026-11.io.sanboot.liotest:"

// kernelRoot returns the configfs root of a real LIO, or skips.
func kernelRoot(t testing.TB) string {
	t.Helper()
	root := os.Getenv("SANBOOT_LIO_CONFIGFS")
	if root == "" {
		t.Skip("needs a kernel with LIO: set SANBOOT_LIO_CONFIGFS=/sys/kernel/config/target " +
			"(hack/e2e-lio.sh runs these tests in a VM with a stock Debian kernel)")
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("SANBOOT_LIO_CONFIGFS=%s: %v: load target_core_mod and iscsi_target_mod and mount configfs", root, err)
	}
	return root
}

// kernelPortal is the portal the tests' targets listen on.
func kernelPortal() string {
	if p := os.Getenv("SANBOOT_LIO_PORTAL"); p != "" {
		return p
	}
	return "127.0.0.1:3260"
}

func kernelDriver(t testing.TB, root string) *Driver {
	return New(Config{Root: root, Log: testLog(t)})
}

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func TestKernelConformance(t *testing.T) {
	root := kernelRoot(t)
	targettest.Run(t, func(t *testing.T) target.Driver { return kernelDriver(t, root) }, targettest.WithPortals(kernelPortal()))
}

// kernelTarget returns a target named kernelPrefix+name with a sparse
// backing file of size bytes, deleted when the test ends.
func kernelTarget(t testing.TB, d *Driver, name string, size int64) target.Target {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".raw")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	tg := target.Target{
		IQN:         kernelPrefix + name,
		BackingPath: p,
		SizeBytes:   size,
		Initiators:  []string{kernelPrefix + "initiator." + name},
		Portals:     []string{kernelPortal()},
		Serial:      target.Serial("liotest", name),
	}
	t.Cleanup(func() {
		if err := d.Delete(context.Background(), tg.IQN); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return tg
}

func readRaw(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKernelLayout checks what Ensure leaves in configfs, read with plain
// file reads: serial, thin provisioning, explicit ACL with its mapped LUN,
// CHAP values without a trailing newline, enable.
func TestKernelLayout(t *testing.T) {
	root := kernelRoot(t)
	d := kernelDriver(t, root)
	ctx := context.Background()
	tg := kernelTarget(t, d, "layout", 8<<20)
	tg.CHAP = &target.CHAP{
		Incoming: target.Credentials{User: "user-layout", Secret: target.NewSecret("incoming-0123456")},
		Mutual:   &target.Credentials{User: "target-layout", Secret: target.NewSecret("mutual-012345678")},
	}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	tpg := filepath.Join(root, "iscsi", tg.IQN, "tpgt_1")
	acl := filepath.Join(tpg, "acls", tg.Initiators[0])
	bs := filepath.Join(root, "core", "fileio_*", tg.IQN)
	matches, _ := filepath.Glob(bs)
	if len(matches) != 1 {
		t.Fatalf("backstore %s: %d matches, want 1", bs, len(matches))
	}
	bs = matches[0]
	for _, c := range []struct{ path, want string }{
		{filepath.Join(bs, "wwn", "vpd_unit_serial"), "T10 VPD Unit Serial Number: " + tg.Serial + "\n"},
		{filepath.Join(bs, "attrib", "emulate_tpu"), "1\n"},
		{filepath.Join(bs, "attrib", "emulate_tpws"), "1\n"},
		{filepath.Join(bs, "enable"), "1\n"},
		{filepath.Join(tpg, "enable"), "1\n"},
		{filepath.Join(tpg, "attrib", "generate_node_acls"), "0\n"},
		{filepath.Join(tpg, "attrib", "authentication"), "1\n"},
		{filepath.Join(acl, "attrib", "authentication"), "-1\n"},
		// The kernel prints a value and "\n": a value stored with its own
		// newline would read back with two.
		{filepath.Join(acl, "auth", "userid"), "user-layout\n"},
		{filepath.Join(acl, "auth", "password"), "incoming-0123456\n"},
		{filepath.Join(acl, "auth", "userid_mutual"), "target-layout\n"},
		{filepath.Join(acl, "auth", "password_mutual"), "mutual-012345678\n"},
		{filepath.Join(acl, "auth", "authenticate_target"), "1\n"},
	} {
		if got := readRaw(t, c.path); got != c.want {
			if strings.Contains(c.path, "password") {
				t.Errorf("%s differs from the secret set (%d bytes, want %d)", c.path, len(got), len(c.want))
			} else {
				t.Errorf("%s = %q, want %q", c.path, got, c.want)
			}
		}
	}
	if !strings.Contains(readRaw(t, filepath.Join(bs, "info")), "File: "+tg.BackingPath+"  Size: 8388608") {
		t.Errorf("backstore info = %q", readRaw(t, filepath.Join(bs, "info")))
	}
	link, err := os.Readlink(filepath.Join(acl, "lun_0", "map"))
	if err != nil || filepath.Base(link) != "lun_0" {
		t.Errorf("mapped LUN link = %q, %v", link, err)
	}
	if _, err := os.Stat(filepath.Join(tpg, "np", kernelPortal())); err != nil {
		t.Errorf("portal: %v", err)
	}

	// Mutual off, then CHAP off: the values go, authentication is off.
	tg.CHAP.Mutual = nil
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if got := readRaw(t, filepath.Join(acl, "auth", "authenticate_target")); got != "0\n" {
		t.Errorf("authenticate_target after mutual CHAP off = %q", got)
	}
	tg.CHAP = nil
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if got := readRaw(t, filepath.Join(tpg, "attrib", "authentication")); got != "0\n" {
		t.Errorf("authentication after CHAP off = %q", got)
	}
	for _, f := range []string{"userid", "password"} {
		if got := attr(readRaw(t, filepath.Join(acl, "auth", f))); got != "" && got != unset {
			t.Errorf("%s still set after CHAP off", f)
		}
	}
}

// TestKernelSecondEnsureChangesNothing: an Ensure of a target that is as
// wanted only reads.
func TestKernelSecondEnsureChangesNothing(t *testing.T) {
	root := kernelRoot(t)
	d := kernelDriver(t, root)
	ctx := context.Background()
	tg := kernelTarget(t, d, "again", 8<<20)
	tg.CHAP = &target.CHAP{Incoming: target.Credentials{User: "user-again", Secret: target.NewSecret("incoming-0123456")}}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	before := d.Ops()
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if ops := d.Ops().Sub(before); ops.Changes() != 0 {
		t.Errorf("second Ensure made %v, want no change", ops)
	}
}

// TestKernelHalfBuilt: what an interrupted Ensure leaves (a backstore not
// enabled; a portal group not enabled) is found and finished, and List
// shows the unfinished target as different from what is wanted.
func TestKernelHalfBuilt(t *testing.T) {
	root := kernelRoot(t)
	d := kernelDriver(t, root)
	ctx := context.Background()
	tg := kernelTarget(t, d, "half", 8<<20)

	// A backstore named after the target, made but never enabled, where
	// an interrupted Ensure leaves it (the home HBA of its IQN); and one
	// outside the probe chain, which Delete finds by reading every HBA.
	if err := os.MkdirAll(filepath.Join(root, "iscsi"), 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	home := filepath.Join(root, "core", fmt.Sprintf("fileio_%d", hbaHome(tg.IQN)))
	stray := filepath.Join(root, "core", "fileio_4242")
	for _, dir := range []string{home, filepath.Join(home, tg.IQN), stray, filepath.Join(stray, tg.IQN)} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if got := readRaw(t, filepath.Join(home, tg.IQN, "enable")); got != "1\n" {
		t.Errorf("the backstore in the home HBA is not enabled (%q): it should have been made again there", got)
	}
	got, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(got, func(x target.Target) bool { return x.IQN == tg.IQN }); i < 0 || !target.SameConfig(got[i], tg) {
		t.Fatalf("List = %v, want %v in it", got, tg)
	}

	// A portal group left disabled shows without portals, so that the
	// reconciler ensures it again; Ensure enables it.
	tpgEnable := filepath.Join(root, "iscsi", tg.IQN, "tpgt_1", "enable")
	if err := os.WriteFile(tpgEnable, []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	got, _ = d.List(ctx)
	for _, x := range got {
		if x.IQN == tg.IQN && (len(x.Portals) != 0 || target.SameConfig(x, tg)) {
			t.Errorf("a disabled target lists as %v", x)
		}
	}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if got := readRaw(t, tpgEnable); got != "1\n" {
		t.Errorf("enable = %q after Ensure", got)
	}
	if err := d.Delete(ctx, tg.IQN); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{home, stray} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("after Delete, %s is still there (%v)", dir, err)
		}
	}
}

// TestKernelLeavesOthersAlone: a target and backstore made by someone
// else survive Ensure and Delete of sanboot's, and List shows the foreign
// target.
func TestKernelLeavesOthersAlone(t *testing.T) {
	root := kernelRoot(t)
	d := kernelDriver(t, root)
	ctx := context.Background()
	foreign := kernelTarget(t, d, "foreign", 8<<20)
	// Built the way targetcli would: its own backstore name, HBA index 0.
	hba := filepath.Join(root, "core", "fileio_"+freeHBAIndex(t, root))
	dev := filepath.Join(hba, "someones_disk")
	tpg := filepath.Join(root, "iscsi", foreign.IQN, "tpgt_1")
	for _, step := range []func() error{
		func() error { return os.MkdirAll(filepath.Join(root, "iscsi"), 0o755) },
		func() error { return os.Mkdir(hba, 0o755) },
		func() error { return os.Mkdir(dev, 0o755) },
		func() error {
			return writeOnce(filepath.Join(dev, "control"), fmt.Sprintf("fd_dev_name=%s,fd_dev_size=%d", foreign.BackingPath, foreign.SizeBytes))
		},
		func() error { return writeOnce(filepath.Join(dev, "enable"), "1") },
		func() error { return os.MkdirAll(filepath.Join(tpg, "lun", "lun_0"), 0o755) },
		func() error { return os.Symlink(dev, filepath.Join(tpg, "lun", "lun_0", "someones_link")) },
	} {
		if err := step(); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		os.Remove(dev)
		os.Remove(hba)
	})
	ours := kernelTarget(t, d, "ours", 8<<20)
	if err := d.Ensure(ctx, ours); err != nil {
		t.Fatal(err)
	}
	got, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(got, func(x target.Target) bool { return x.IQN == foreign.IQN })
	if i < 0 || got[i].BackingPath != foreign.BackingPath || got[i].SizeBytes != foreign.SizeBytes {
		t.Errorf("List does not show the foreign target with its backing file: %v", got)
	}
	if err := d.Delete(ctx, ours.IQN); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, foreign.IQN); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dev); err != nil {
		t.Errorf("Delete of the foreign target removed its backstore, which sanboot did not name: %v", err)
	}
}

func freeHBAIndex(t testing.TB, root string) string {
	for n := 100; n < 1000; n++ {
		if m, _ := filepath.Glob(filepath.Join(root, "core", fmt.Sprintf("*_%d", n))); len(m) == 0 {
			return fmt.Sprint(n)
		}
	}
	t.Fatal("no free HBA index")
	return ""
}

func writeOnce(p, v string) error { return osFS{}.WriteFile(p, v) }

// TestKernelBlockDevice serves a loop device through iblock.
func TestKernelBlockDevice(t *testing.T) {
	root := kernelRoot(t)
	d := kernelDriver(t, root)
	ctx := context.Background()
	tg := kernelTarget(t, d, "block", 8<<20)
	tg.BackingPath = loopDevice(t, tg.BackingPath)
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	got, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(got, func(x target.Target) bool { return x.IQN == tg.IQN })
	if i < 0 || !target.SameConfig(got[i], tg) {
		t.Fatalf("List = %v, want %v in it", got, tg)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "core", "iblock_*", tg.IQN)); len(m) != 1 {
		t.Errorf("no iblock backstore: %v", m)
	}
	if err := d.Delete(ctx, tg.IQN); err != nil {
		t.Fatal(err)
	}
}

// loopDevice attaches file to a free loop device, detached when the test
// ends.
func loopDevice(t testing.TB, file string) string {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("%v: the loop module is needed", err)
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		t.Fatal(err)
	}
	dev := fmt.Sprintf("/dev/loop%d", n)
	var loop *os.File
	for range 50 { // devtmpfs makes the node shortly after
		if loop, err = os.OpenFile(dev, os.O_RDWR, 0); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(f.Fd())); err != nil {
		t.Fatalf("LOOP_SET_FD %s: %v", dev, err)
	}
	t.Cleanup(func() {
		unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
		loop.Close()
	})
	return dev
}

// BenchmarkKernelEnsureNew measures building one new target, and reports
// the configfs operations it takes.
func BenchmarkKernelEnsureNew(b *testing.B) {
	root := kernelRoot(b)
	d := kernelDriver(b, root)
	ctx := context.Background()
	var targets []target.Target
	for i := range b.N {
		targets = append(targets, kernelTarget(b, d, fmt.Sprintf("bench-new-%d", i), 8<<20))
	}
	before := d.Ops()
	b.ResetTimer()
	for i := range b.N {
		if err := d.Ensure(ctx, targets[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportOps(b, d.Ops().Sub(before), b.N)
}

// BenchmarkKernelEnsureExisting measures an Ensure that finds everything
// as wanted (what every resync does for every target).
func BenchmarkKernelEnsureExisting(b *testing.B) {
	root := kernelRoot(b)
	d := kernelDriver(b, root)
	ctx := context.Background()
	tg := kernelTarget(b, d, "bench-existing", 8<<20)
	if err := d.Ensure(ctx, tg); err != nil {
		b.Fatal(err)
	}
	before := d.Ops()
	b.ResetTimer()
	for range b.N {
		if err := d.Ensure(ctx, tg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportOps(b, d.Ops().Sub(before), b.N)
}

// BenchmarkKernelDelete measures tearing one target down.
func BenchmarkKernelDelete(b *testing.B) {
	root := kernelRoot(b)
	d := kernelDriver(b, root)
	ctx := context.Background()
	var targets []target.Target
	for i := range b.N {
		tg := kernelTarget(b, d, fmt.Sprintf("bench-del-%d", i), 8<<20)
		if err := d.Ensure(ctx, tg); err != nil {
			b.Fatal(err)
		}
		targets = append(targets, tg)
	}
	before := d.Ops()
	b.ResetTimer()
	for _, tg := range targets {
		if err := d.Delete(ctx, tg.IQN); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportOps(b, d.Ops().Sub(before), b.N)
}

// BenchmarkKernelRebuild measures what an agent does after a reboot
// emptied configfs: build 100 (or 500) targets, 8 at a time (the
// reconciler's default --workers), with CHAP on every other one.
func BenchmarkKernelRebuild(b *testing.B) {
	for _, n := range []int{100, 500} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchRebuild(b, n) })
	}
}

func benchRebuild(b *testing.B, n int) {
	root := kernelRoot(b)
	d := kernelDriver(b, root)
	ctx := context.Background()
	const workers = 8
	targets := make([]target.Target, n)
	for i := range targets {
		targets[i] = kernelTarget(b, d, fmt.Sprintf("bench-rebuild-%03d", i), 8<<20)
		if i%2 == 1 {
			targets[i].CHAP = &target.CHAP{Incoming: target.Credentials{User: targets[i].Initiators[0],
				Secret: target.NewSecret(fmt.Sprintf("secret-%03d-0123456", i))}}
		}
	}
	var ops Ops
	b.ResetTimer()
	for range b.N {
		before := d.Ops()
		work := make(chan target.Target)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range workers {
			wg.Go(func() {
				for tg := range work {
					if err := d.Ensure(ctx, tg); err != nil {
						errs <- err
					}
				}
			})
		}
		for _, tg := range targets {
			work <- tg
		}
		close(work)
		wg.Wait()
		b.StopTimer()
		ops = d.Ops().Sub(before)
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		for _, tg := range targets { // the next reboot
			if err := d.Delete(ctx, tg.IQN); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	reportOps(b, ops, n)
}

func reportOps(b *testing.B, ops Ops, targets int) {
	b.ReportMetric(float64(ops.Total())/float64(targets), "ops/target")
	b.ReportMetric(float64(ops.Changes())/float64(targets), "changes/target")
	b.ReportMetric(float64(ops.Entries)/float64(targets), "dirents/target")
}

// BenchmarkKernelBare is the floor the driver is measured against: 500
// targets made by bare configfs calls from 8 goroutines, the objects of a
// new target in the order Ensure makes them (hack/lio/bare-targets.sh
// does the same from the shell), CHAP on every other one, nothing read
// back or checked. Their backing files are 8 MiB sparse files, or the
// first 500 *.raw files of SANBOOT_LIO_BARE_DIR (the agent's disks: after
// a reboot their inodes are not cached, as for the agent's rebuild).
// hack/e2e-lio.sh --bench runs it once in a guest that it reboots next,
// with SANBOOT_LIO_BENCH_KEEP=1: the targets stay (removing 500 takes
// minutes under TCG).
func BenchmarkKernelBare(b *testing.B) {
	root := kernelRoot(b)
	const n, workers = 500, 8
	dir := b.TempDir()
	keep := os.Getenv("SANBOOT_LIO_BENCH_KEEP") == "1"
	if keep && b.N > 1 {
		b.Fatal("SANBOOT_LIO_BENCH_KEEP=1 builds the targets once: use -test.benchtime 1x")
	}
	files := make([]string, n)
	if disks := os.Getenv("SANBOOT_LIO_BARE_DIR"); disks != "" {
		found, err := filepath.Glob(filepath.Join(disks, "*.raw"))
		if err != nil || len(found) < n {
			b.Fatalf("SANBOOT_LIO_BARE_DIR=%s: %d *.raw files (%v), want %d", disks, len(found), err, n)
		}
		copy(files, found)
	}
	for i := range files {
		if files[i] == "" {
			files[i] = filepath.Join(dir, fmt.Sprintf("bare-%03d.raw", i))
			if err := os.WriteFile(files[i], nil, 0o600); err != nil {
				b.Fatal(err)
			}
			if err := os.Truncate(files[i], 8<<20); err != nil {
				b.Fatal(err)
			}
		}
	}
	var raw osFS
	build := func(i int) error {
		name := fmt.Sprintf("bare-%03d", i)
		iqn, in := kernelPrefix+name, kernelPrefix+"initiator."+name
		bs := filepath.Join(root, coreDir, fmt.Sprintf("fileio_%d", 900000+i), iqn)
		tpg := filepath.Join(root, fabricDir, iqn, tpgName)
		lun := filepath.Join(tpg, "lun", "lun_0")
		acl := filepath.Join(tpg, "acls", in)
		fi, err := os.Stat(files[i]) // the size, as Ensure checks the backing file (timed: a cold inode after a reboot)
		if err != nil {
			return err
		}
		steps := []func() error{
			func() error { return raw.Mkdir(filepath.Dir(bs)) },
			func() error { return raw.Mkdir(bs) },
			func() error {
				return raw.WriteFile(filepath.Join(bs, "control"), fmt.Sprintf("fd_dev_name=%s,fd_dev_size=%d", files[i], fi.Size()))
			},
			func() error { return raw.WriteFile(filepath.Join(bs, "enable"), "1") },
			func() error { return raw.WriteFile(filepath.Join(bs, "wwn", "vpd_unit_serial"), "bare-"+name) },
			func() error { return raw.WriteFile(filepath.Join(bs, "attrib", "emulate_tpu"), "1") },
			func() error { return raw.WriteFile(filepath.Join(bs, "attrib", "emulate_tpws"), "1") },
			func() error { return raw.Mkdir(filepath.Dir(tpg)) },
			func() error { return raw.Mkdir(tpg) },
			func() error { return raw.Mkdir(filepath.Join(tpg, "np", kernelPortal())) },
			func() error { return raw.Mkdir(lun) },
			func() error { return raw.Symlink(bs, filepath.Join(lun, lunLink)) },
			func() error { return raw.WriteFile(filepath.Join(tpg, "attrib", "generate_node_acls"), "0") },
			func() error { return raw.Mkdir(acl) },
			func() error { return raw.Mkdir(filepath.Join(acl, "lun_0")) },
			func() error { return raw.Symlink(lun, filepath.Join(acl, "lun_0", mapLink)) },
		}
		if i%2 == 1 {
			steps = append(steps,
				func() error { return raw.WriteFile(filepath.Join(acl, "auth", "userid"), in) },
				func() error {
					return raw.WriteFile(filepath.Join(acl, "auth", "password"), fmt.Sprintf("secret-%03d-0123456", i))
				},
				func() error { return raw.WriteFile(filepath.Join(tpg, "attrib", "authentication"), "1") })
		} else {
			steps = append(steps, func() error { return raw.WriteFile(filepath.Join(tpg, "attrib", "authentication"), "0") })
		}
		steps = append(steps, func() error { return raw.WriteFile(filepath.Join(tpg, "enable"), "1") })
		for _, f := range steps {
			if err := f(); err != nil {
				return fmt.Errorf("target %s: %w", name, err)
			}
		}
		return nil
	}
	d := kernelDriver(b, root)
	if err := os.Mkdir(filepath.Join(root, fabricDir), 0o755); err != nil && !os.IsExist(err) {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		work := make(chan int)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := range work {
					if err := build(i); err != nil {
						errs <- err
					}
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		if !keep {
			for i := range n {
				if err := d.Delete(context.Background(), kernelPrefix+fmt.Sprintf("bare-%03d", i)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StartTimer()
	}
}
