// Package storetest is the conformance suite every store.Store must pass
// (package filestore on XFS with reflink and on ext4, and the fake), in the
// manner of containerd's
// snapshots/testsuite:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
//	}
//
// newStore must return an empty store. The suite uses blank images, and
// snapshot and copy sources made from them: the sources every store
// supports without a way to fetch bytes.
package storetest

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sanboot/sanboot/agent/store"
)

// Run runs every conformance test against stores from newStore.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"EnsureImageIsIdempotent", testEnsureImage},
		{"EnsureImageMismatch", testMismatch},
		{"InvalidNamesChangeNothing", testInvalid},
		{"CloneMissingImage", testCloneMissing},
		{"CloneMakesDisk", testClone},
		{"CloneNeverOverwrites", testCloneIdempotent},
		{"DeleteDiskIsIdempotent", testDeleteDisk},
		{"DeleteImageKeepsDisks", testDeleteImage},
		{"ListsAreSorted", testSorted},
		{"CapacityIsSane", testCapacity},
		{"CloneLargerThanFreeSpace", testNoSpace},
		{"ImagesFromSnapshotAndCopy", testSnapshotAndCopy},
		{"DiskRemembersItsOwner", testOwner},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

var ctx = context.Background()

// validPath: a store keeps its bytes in files (an absolute path) or in RBD
// images (rbd:POOL/IMAGE).
func validPath(p string) bool {
	_, _, rbd := store.ParseRBDPath(p)
	return filepath.IsAbs(p) || rbd
}

func blank(project, name string, size int64) store.ImageSpec {
	return store.ImageSpec{Project: project, Name: name, SizeBytes: size, Source: store.Source{Kind: store.SourceBlank}}
}

func mustImage(t *testing.T, s store.Store, spec store.ImageSpec) store.Image {
	t.Helper()
	im, err := s.EnsureImage(ctx, spec)
	if err != nil {
		t.Fatalf("EnsureImage(%s/%s): %v", spec.Project, spec.Name, err)
	}
	return im
}

func mustClone(t *testing.T, s store.Store, project, image, node string) store.Disk {
	t.Helper()
	d, err := s.Clone(ctx, project, image, node, "")
	if err != nil {
		t.Fatalf("Clone(%s/%s -> %s): %v", project, image, node, err)
	}
	return d
}

func images(t *testing.T, s store.Store) []store.Image {
	t.Helper()
	l, err := s.ListImages(ctx)
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	return l
}

func disks(t *testing.T, s store.Store) []store.Disk {
	t.Helper()
	l, err := s.ListDisks(ctx)
	if err != nil {
		t.Fatalf("ListDisks: %v", err)
	}
	return l
}

func testEnsureImage(t *testing.T, s store.Store) {
	spec := blank("default", "golden", 64<<20)
	im := mustImage(t, s, spec)
	if im.Project != "default" || im.Name != "golden" || im.SizeBytes != 64<<20 || im.Source.Kind != store.SourceBlank {
		t.Errorf("EnsureImage = %+v, want default/golden, 64 MiB, blank", im)
	}
	if !validPath(im.Path) {
		t.Errorf("image path %q is neither absolute nor rbd:POOL/IMAGE", im.Path)
	}
	again := mustImage(t, s, spec)
	if again != im {
		t.Errorf("second EnsureImage = %+v, want %+v", again, im)
	}
	st, err := s.StatImage(ctx, "default", "golden")
	if err != nil || st != im {
		t.Errorf("StatImage = %+v, %v; want %+v", st, err, im)
	}
	if l := images(t, s); len(l) != 1 || l[0] != im {
		t.Errorf("ListImages = %+v, want [%+v]", l, im)
	}
	if _, err := s.StatImage(ctx, "default", "other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatImage of a missing image: %v, want ErrNotFound", err)
	}
}

func testMismatch(t *testing.T, s store.Store) {
	im := mustImage(t, s, blank("default", "golden", 64<<20))
	if _, err := s.EnsureImage(ctx, blank("default", "golden", 128<<20)); !errors.Is(err, store.ErrMismatch) {
		t.Errorf("EnsureImage with another size: %v, want ErrMismatch", err)
	}
	if l := images(t, s); len(l) != 1 || l[0] != im {
		t.Errorf("after a mismatch ListImages = %+v, want [%+v]", l, im)
	}
}

func testInvalid(t *testing.T, s store.Store) {
	mustImage(t, s, blank("default", "golden", 1<<20))
	mustClone(t, s, "default", "golden", "node-01")
	before, beforeDisks := images(t, s), disks(t, s)
	bad := []struct {
		name string
		call func() error
	}{
		{"image name with ..", func() error { _, err := s.EnsureImage(ctx, blank("default", "..", 1<<20)); return err }},
		{"image name with /", func() error { _, err := s.EnsureImage(ctx, blank("default", "a/b", 1<<20)); return err }},
		{"uppercase project", func() error { _, err := s.EnsureImage(ctx, blank("Default", "x", 1<<20)); return err }},
		{"empty project", func() error { _, err := s.EnsureImage(ctx, blank("", "x", 1<<20)); return err }},
		{"zero size", func() error { _, err := s.EnsureImage(ctx, blank("default", "x", 0)); return err }},
		{"size not a multiple of 512", func() error { _, err := s.EnsureImage(ctx, blank("default", "x", 1000)); return err }},
		{"unknown source", func() error {
			_, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "x", SizeBytes: 512, Source: store.Source{Kind: "ftp"}})
			return err
		}},
		{"clone to ../node", func() error { _, err := s.Clone(ctx, "default", "golden", "../node", ""); return err }},
		{"clone from ../golden", func() error { _, err := s.Clone(ctx, "default", "../golden", "node-02", ""); return err }},
		{"delete disk ..", func() error { return s.DeleteDisk(ctx, "default", "..") }},
		{"delete disk in project ..", func() error { return s.DeleteDisk(ctx, "..", "node-01") }},
		{"delete image with /", func() error { return s.DeleteImage(ctx, "default", "golden/..") }},
		{"stat disk /", func() error { _, err := s.StatDisk(ctx, "default", "/"); return err }},
	}
	for _, b := range bad {
		if err := b.call(); err == nil {
			t.Errorf("%s: accepted", b.name)
		}
	}
	if after := images(t, s); len(after) != len(before) || after[0] != before[0] {
		t.Errorf("images changed: %+v -> %+v", before, after)
	}
	if after := disks(t, s); len(after) != len(beforeDisks) || after[0] != beforeDisks[0] {
		t.Errorf("disks changed: %+v -> %+v", beforeDisks, after)
	}
}

func testCloneMissing(t *testing.T, s store.Store) {
	if _, err := s.Clone(ctx, "default", "missing", "node-01", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Clone of a missing image: %v, want ErrNotFound", err)
	}
	if l := disks(t, s); len(l) != 0 {
		t.Errorf("a failed clone left disks %+v", l)
	}
}

func testClone(t *testing.T, s store.Store) {
	im := mustImage(t, s, blank("default", "golden", 64<<20))
	d := mustClone(t, s, "default", "golden", "node-01")
	want := store.Disk{Project: "default", Node: "node-01", Image: "golden", Path: d.Path, SizeBytes: im.SizeBytes, CloneMode: s.CloneMode()}
	if d != want {
		t.Errorf("Clone = %+v, want %+v", d, want)
	}
	if !validPath(d.Path) || d.Path == im.Path {
		t.Errorf("disk path %q: want an absolute or rbd:POOL/IMAGE path of its own (image at %q)", d.Path, im.Path)
	}
	if st, err := s.StatDisk(ctx, "default", "node-01"); err != nil || st != d {
		t.Errorf("StatDisk = %+v, %v; want %+v", st, err, d)
	}
	if l := disks(t, s); len(l) != 1 || l[0] != d {
		t.Errorf("ListDisks = %+v, want [%+v]", l, d)
	}
	d2 := mustClone(t, s, "default", "golden", "node-02")
	if d2.Path == d.Path {
		t.Errorf("two nodes share the disk path %q", d.Path)
	}
}

func testCloneIdempotent(t *testing.T, s store.Store) {
	mustImage(t, s, blank("default", "golden", 64<<20))
	mustImage(t, s, blank("default", "other", 32<<20))
	d := mustClone(t, s, "default", "golden", "node-01")
	if again := mustClone(t, s, "default", "golden", "node-01"); again != d {
		t.Errorf("second Clone = %+v, want %+v", again, d)
	}
	if other := mustClone(t, s, "default", "other", "node-01"); other != d {
		t.Errorf("Clone from another image over an existing disk = %+v, want the disk unchanged %+v", other, d)
	}
	if l := disks(t, s); len(l) != 1 {
		t.Errorf("ListDisks = %+v, want one disk", l)
	}
}

func testDeleteDisk(t *testing.T, s store.Store) {
	mustImage(t, s, blank("default", "golden", 1<<20))
	mustClone(t, s, "default", "golden", "node-01")
	keep := mustClone(t, s, "default", "golden", "node-02")
	for i := range 2 {
		if err := s.DeleteDisk(ctx, "default", "node-01"); err != nil {
			t.Fatalf("DeleteDisk #%d: %v", i+1, err)
		}
	}
	if _, err := s.StatDisk(ctx, "default", "node-01"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatDisk after DeleteDisk: %v, want ErrNotFound", err)
	}
	if l := disks(t, s); len(l) != 1 || l[0] != keep {
		t.Errorf("ListDisks = %+v, want [%+v]", l, keep)
	}
	if err := s.DeleteDisk(ctx, "other", "never"); err != nil {
		t.Errorf("DeleteDisk of a disk that never existed: %v, want nil", err)
	}
}

func testDeleteImage(t *testing.T, s store.Store) {
	mustImage(t, s, blank("default", "golden", 1<<20))
	d := mustClone(t, s, "default", "golden", "node-01")
	for i := range 2 {
		if err := s.DeleteImage(ctx, "default", "golden"); err != nil {
			t.Fatalf("DeleteImage #%d: %v", i+1, err)
		}
	}
	if _, err := s.StatImage(ctx, "default", "golden"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatImage after DeleteImage: %v, want ErrNotFound", err)
	}
	if st, err := s.StatDisk(ctx, "default", "node-01"); err != nil || st != d {
		t.Errorf("the disk cloned from a deleted image: %+v, %v; want %+v", st, err, d)
	}
	if _, err := s.Clone(ctx, "default", "golden", "node-02", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Clone from a deleted image: %v, want ErrNotFound", err)
	}
}

func testSorted(t *testing.T, s store.Store) {
	for _, pn := range [][2]string{{"b", "y"}, {"a", "z"}, {"b", "x"}, {"a", "a"}} {
		mustImage(t, s, blank(pn[0], pn[1], 1<<20))
		mustClone(t, s, pn[0], pn[1], "n-"+pn[1])
	}
	var got []string
	for _, im := range images(t, s) {
		got = append(got, im.Project+"/"+im.Name)
	}
	for _, d := range disks(t, s) {
		got = append(got, d.Project+"/"+d.Node)
	}
	want := []string{"a/a", "a/z", "b/x", "b/y", "a/n-a", "a/n-z", "b/n-x", "b/n-y"}
	if len(got) != len(want) {
		t.Fatalf("lists = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("lists = %v, want %v", got, want)
		}
	}
}

func testCapacity(t *testing.T, s store.Store) {
	c, err := s.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.CapacityBytes <= 0 || c.FreeBytes < 0 || c.FreeBytes > c.CapacityBytes {
		t.Errorf("Capacity = %+v: want 0 <= free <= capacity, capacity > 0", c)
	}
	mustImage(t, s, blank("default", "golden", 1<<30))
	mustClone(t, s, "default", "golden", "node-01")
	c2, err := s.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c2.CapacityBytes != c.CapacityBytes {
		t.Errorf("capacity changed from %d to %d", c.CapacityBytes, c2.CapacityBytes)
	}
}

func testNoSpace(t *testing.T, s store.Store) {
	c, err := s.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	size := (c.FreeBytes/512 + 2048) * 512 // 1 MiB more than free
	if _, err := s.EnsureImage(ctx, blank("default", "huge", size)); err != nil {
		t.Skipf("this store cannot hold a sparse blank image of %d bytes: %v", size, err)
	}
	if _, err := s.Clone(ctx, "default", "huge", "node-01", ""); !errors.Is(err, store.ErrNoSpace) {
		t.Errorf("Clone of %d bytes with %d free: %v, want ErrNoSpace", size, c.FreeBytes, err)
	}
	if _, err := s.StatDisk(ctx, "default", "node-01"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused clone left a disk: %v", err)
	}
}

func testSnapshotAndCopy(t *testing.T, s store.Store) {
	mustImage(t, s, blank("default", "golden", 1<<20))
	mustClone(t, s, "default", "golden", "node-01")
	snapSpec := store.ImageSpec{Project: "default", Name: "snap", SizeBytes: 1 << 20,
		Source: store.Source{Kind: store.SourceSnapshot, Node: "node-01"}}
	snap := mustImage(t, s, snapSpec)
	if snap.Source != snapSpec.Source || snap.SizeBytes != snapSpec.SizeBytes || snap.Name != "snap" {
		t.Errorf("snapshot image = %+v, want %+v", snap, snapSpec)
	}
	if again := mustImage(t, s, snapSpec); again != snap {
		t.Errorf("second EnsureImage of the snapshot = %+v, want %+v", again, snap)
	}
	copySpec := store.ImageSpec{Project: "default", Name: "copy", SizeBytes: 1 << 20,
		Source: store.Source{Kind: store.SourceCopy, Image: "golden"}}
	cp := mustImage(t, s, copySpec)
	if cp.Source != copySpec.Source || cp.SizeBytes != copySpec.SizeBytes || cp.Path == snap.Path {
		t.Errorf("copied image = %+v, want %+v at a path of its own", cp, copySpec)
	}
	if d := mustClone(t, s, "default", "snap", "node-02"); d.Image != "snap" || d.SizeBytes != 1<<20 {
		t.Errorf("clone of the snapshot = %+v, want a disk of image snap", d)
	}
	var got []string
	for _, im := range images(t, s) {
		got = append(got, im.Name)
	}
	if want := []string{"copy", "golden", "snap"}; !slices.Equal(got, want) {
		t.Errorf("ListImages = %v, want %v", got, want)
	}
}

// testOwner: a disk keeps the uid of the node record it was made for, and a
// second Clone (another owner) returns the existing disk with its owner, so
// that the caller can tell it is not its own.
func testOwner(t *testing.T, s store.Store) {
	mustImage(t, s, blank("default", "golden", 1<<20))
	if _, err := s.Clone(ctx, "default", "golden", "node-01", "uid-first"); err != nil {
		t.Fatal(err)
	}
	d, err := s.StatDisk(ctx, "default", "node-01")
	if err != nil || d.Owner != "uid-first" {
		t.Fatalf("StatDisk = %+v, %v; want owner uid-first", d, err)
	}
	d, err = s.Clone(ctx, "default", "golden", "node-01", "uid-second")
	if err != nil || d.Owner != "uid-first" {
		t.Fatalf("second Clone = %+v, %v; want the existing disk, owner uid-first", d, err)
	}
}
