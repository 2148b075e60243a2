// Package looptest mounts a real file system on a loop device for tests:
// a sparse backing file in t.TempDir(), mkfs, losetup, mount in a temp dir,
// and umount plus losetup -d when the test ends. Store tests use it to run
// on XFS with reflink and on btrfs; target tests use it for block devices.
//
// It needs root and the mkfs tools (xfsprogs, btrfs-progs, e2fsprogs,
// util-linux; hack/install-deps.sh installs them). When something is
// missing the test fails and says what to install: it never skips.
package looptest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FS is a file system type Mount knows how to make.
type FS string

// File systems Mount can make.
const (
	// XFS with reflink=1: FICLONE works.
	XFS FS = "xfs"
	// Btrfs: FICLONE works.
	Btrfs FS = "btrfs"
	// Ext4: no reflink; clones are copies.
	Ext4 FS = "ext4"
)

// mkfs returns the command that makes fs on dev, and the package that
// provides it.
func mkfs(fs FS, dev string) ([]string, string) {
	switch fs {
	case XFS:
		return []string{"mkfs.xfs", "-q", "-f", "-m", "reflink=1", dev}, "xfsprogs"
	case Btrfs:
		return []string{"mkfs.btrfs", "-q", "-f", dev}, "btrfs-progs"
	case Ext4:
		// No journal and no reserved blocks: small file systems keep
		// most of their size free, which is what space tests want.
		return []string{"mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", dev}, "e2fsprogs"
	}
	return nil, ""
}

// Mount makes a file system of type fs and size bytes on a loop device and
// mounts it; it returns the mount point (ext4 puts lost+found there: work in
// a subdirectory when that matters). Everything is undone when the test
// ends.
//
// Sizes: XFS needs at least 300 MiB, btrfs at least 114 MiB (a little more
// than that keeps btrfs out of its mixed small-fs mode), ext4 a few MiB.
func Mount(t testing.TB, fs FS, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("looptest: mounting a %s loop file system needs root: run the tests as root (sudo -E go test ...)", fs)
	}
	cmd, pkg := mkfs(fs, "")
	if cmd == nil {
		t.Fatalf("looptest: unknown file system %q: use looptest.XFS, Btrfs or Ext4", fs)
	}
	for _, tool := range []struct{ name, pkg string }{{cmd[0], pkg}, {"losetup", "util-linux"}, {"mount", "util-linux"}, {"umount", "util-linux"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			t.Fatalf("looptest: %s not found in PATH: install %s (hack/install-deps.sh does)", tool.name, tool.pkg)
		}
	}

	dir := t.TempDir() // removed after the cleanups below have run
	img := filepath.Join(dir, string(fs)+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatalf("looptest: create backing file: %v", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatalf("looptest: size backing file to %d bytes: %v", size, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("looptest: close backing file: %v", err)
	}

	dev := strings.TrimSpace(run(t, "losetup", "--find", "--show", img))
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("looptest: losetup printed %q, want a /dev/loopN device", dev)
	}
	t.Cleanup(func() {
		if out, err := command("losetup", "-d", dev); err != nil {
			t.Errorf("looptest: losetup -d %s: %v: %s", dev, err, out)
		}
	})

	cmd, _ = mkfs(fs, dev)
	run(t, cmd...)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatalf("looptest: %v", err)
	}
	run(t, "mount", "-t", string(fs), dev, mnt)
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

// unmount unmounts mnt, retrying while it is busy (a file still closing),
// and lazily as the last resort so that the loop device can go.
func unmount(t testing.TB, mnt string) {
	t.Helper()
	var out string
	var err error
	for range 20 {
		if out, err = command("umount", mnt); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("looptest: umount %s: %v: %s; unmounting lazily", mnt, err, out)
	if out, err := command("umount", "-l", mnt); err != nil {
		t.Errorf("looptest: umount -l %s: %v: %s", mnt, err, out)
	}
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := command(args...)
	if err != nil {
		t.Fatalf("looptest: %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func command(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Stdout, c.Stderr = &buf, &buf
	err := c.Run()
	return buf.String(), err
}
