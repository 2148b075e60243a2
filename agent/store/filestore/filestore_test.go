package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/store/filestore"
	"github.com/sanboot/sanboot/agent/store/storetest"
	"github.com/sanboot/sanboot/internal/looptest"
)

// TestConformance runs the Store suite on XFS with reflink and on btrfs
// (loop devices: needs root), and on the plain temp dir (ext4 on the
// project's machines: copy mode).
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   looptest.FS
		want store.CloneMode
	}{
		{"xfs", looptest.XFS, store.CloneReflink},
		{"btrfs", looptest.Btrfs, store.CloneReflink},
		{"tempdir", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				root := filepath.Join(t.TempDir(), "store")
				if tc.fs != "" {
					root = mountStore(t, tc.fs, 3<<30)
				}
				s := newStore(t, root, opts{})
				if tc.want != "" && s.CloneMode() != tc.want {
					t.Fatalf("clone mode on %s = %q, want %q", tc.fs, s.CloneMode(), tc.want)
				}
				return s
			})
		})
	}
}

func TestNewValidatesRoot(t *testing.T) {
	for _, root := range []string{"", "relative/store", "/tmp/../tmp/x", "/tmp/x/"} {
		if _, err := filestore.New(filestore.Options{Root: root}); err == nil {
			t.Errorf("New(%q) accepted", root)
		}
	}
}

func TestRootIsLocked(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root, opts{})
	if _, err := filestore.New(filestore.Options{Root: root, Log: slog.New(slog.DiscardHandler)}); err == nil ||
		!strings.Contains(err.Error(), "in use") {
		t.Errorf("second New on a store in use: %v, want an error that says it is in use", err)
	}
	s.Close()
	newStore(t, root, opts{}) // free again
}

// TestCloneModeAndWarning: reflink on XFS and btrfs with no warning; copy
// on ext4 with one warning that says what to do.
func TestCloneModeAndWarning(t *testing.T) {
	for _, tc := range []struct {
		fs   looptest.FS
		size int64
		want store.CloneMode
	}{
		{looptest.XFS, 512 << 20, store.CloneReflink},
		{looptest.Btrfs, 512 << 20, store.CloneReflink},
		{looptest.Ext4, 64 << 20, store.CloneCopy},
	} {
		t.Run(string(tc.fs), func(t *testing.T) {
			var buf bytes.Buffer
			s := newStore(t, mountStore(t, tc.fs, tc.size), opts{log: slog.New(slog.NewTextHandler(&buf, nil))})
			if s.CloneMode() != tc.want {
				t.Errorf("CloneMode = %q, want %q", s.CloneMode(), tc.want)
			}
			warnings := strings.Count(buf.String(), "level=WARN")
			if tc.want == store.CloneCopy {
				if warnings != 1 || !strings.Contains(buf.String(), "reflink=1") || !strings.Contains(buf.String(), "btrfs") {
					t.Errorf("log = %q: want one warning that says to use XFS with reflink=1 or btrfs", buf.String())
				}
			} else if warnings != 0 {
				t.Errorf("log = %q: want no warning", buf.String())
			}
		})
	}
}

// TestReflinkCloneUsesNoSpace clones an image full of data on a reflink
// file system: the disk reads back the same bytes and free space does not
// drop by the image's size.
func TestReflinkCloneUsesNoSpace(t *testing.T) {
	for _, tc := range []struct {
		fs   looptest.FS
		size int64
	}{
		{looptest.XFS, 1 << 30},
		{looptest.Btrfs, 256 << 20},
	} {
		t.Run(string(tc.fs), func(t *testing.T) {
			src := &sources{}
			s := newStore(t, mountStore(t, tc.fs, 3<<30), opts{src: src})
			im := mustImport(t, s, src, "golden", tc.size, func() io.Reader { return randomData(1, tc.size) })
			if got := allocated(t, im.Path); got < tc.size {
				t.Fatalf("the image takes %d bytes, want its whole %d: the test needs an image full of data", got, tc.size)
			}
			before := free(t, s)
			d, err := s.Clone(ctx, "default", "golden", "node-01", "")
			if err != nil {
				t.Fatal(err)
			}
			after := free(t, s)
			if d.CloneMode != store.CloneReflink {
				t.Errorf("disk clone mode = %q, want reflink", d.CloneMode)
			}
			const slack = 32 << 20
			if used := before - after; used > slack {
				t.Errorf("the clone of a %d-byte image used %d bytes of free space, want at most %d", tc.size, used, slack)
			}
			if got := fileSHA(t, d.Path); got != im.SHA256 {
				t.Errorf("disk sha256 %s, image %s", got, im.SHA256)
			}
		})
	}
}

// TestCopyModeKeepsHoles: on ext4 a clone is a copy of the data extents
// only; the disk has the image's bytes and takes no more space than it.
func TestCopyModeKeepsHoles(t *testing.T) {
	src := &sources{}
	s := newStore(t, mountStore(t, looptest.Ext4, 3<<30), opts{src: src})
	const size = 1 << 30
	data := func() io.Reader { return patterned(size, 0, 100<<20, 700<<20, size-1<<20) }
	im := mustImport(t, s, src, "golden", size, data)
	if want := sha(t, data()); im.SHA256 != want {
		t.Errorf("image sha256 %s, want %s", im.SHA256, want)
	}
	imBlocks := allocated(t, im.Path)
	if imBlocks < 4<<20 || imBlocks > 8<<20 {
		t.Errorf("the imported image takes %d bytes; it has 4 MiB of data and the rest zeros: want it sparse", imBlocks)
	}
	d, err := s.Clone(ctx, "default", "golden", "node-01", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.CloneMode != store.CloneCopy || s.CloneMode() != store.CloneCopy {
		t.Errorf("clone mode disk %q, store %q; want copy", d.CloneMode, s.CloneMode())
	}
	if d.SizeBytes != size {
		t.Errorf("disk size %d, want %d", d.SizeBytes, size)
	}
	if got := allocated(t, d.Path); got > imBlocks {
		t.Errorf("the copy takes %d bytes, the image %d: holes were filled", got, imBlocks)
	}
	if got := fileSHA(t, d.Path); got != im.SHA256 {
		t.Errorf("disk sha256 %s, image %s", got, im.SHA256)
	}
}

// TestTempDirCopyMatches: on the plain temp dir (ext4 here, no reflink)
// the store copies, and the copy holds the image's bytes.
func TestTempDirCopyMatches(t *testing.T) {
	src := &sources{}
	s := newStore(t, t.TempDir(), opts{src: src})
	if s.CloneMode() != store.CloneCopy {
		t.Fatalf("CloneMode on the temp dir = %q; this test expects a file system without reflink (ext4, tmpfs): "+
			"run it with TMPDIR on one", s.CloneMode())
	}
	im := mustImport(t, s, src, "golden", 64<<20, func() io.Reader { return patterned(64<<20, 1<<20, 40<<20) })
	d, err := s.Clone(ctx, "default", "golden", "node-01", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.CloneMode != store.CloneCopy {
		t.Errorf("disk clone mode %q, want copy", d.CloneMode)
	}
	if got := fileSHA(t, d.Path); got != im.SHA256 {
		t.Errorf("disk sha256 %s, image %s", got, im.SHA256)
	}
}

func TestImportChecks(t *testing.T) {
	const size = 8 << 20
	data := func() io.Reader { return randomData(7, size) }
	good := sha(t, data())
	for _, tc := range []struct {
		name    string
		size    int64
		sha256  string
		r       func() io.Reader
		wantErr error // nil: any error
		ok      bool
	}{
		{name: "sha256 matches", size: size, sha256: good, r: data, ok: true},
		{name: "sha256 in upper case", size: size, sha256: strings.ToUpper(good), r: data, ok: true},
		{name: "no sha256 given", size: size, r: data, ok: true},
		{name: "sha256 mismatch", size: size, sha256: strings.Repeat("0", 64), r: data, wantErr: store.ErrChecksum},
		{name: "source too short", size: size + 512, r: data, wantErr: store.ErrChecksum},
		{name: "source too long", size: size - 512, r: data, wantErr: store.ErrChecksum},
		{name: "source fails half-way", size: size, r: func() io.Reader { return &errAfter{r: data(), n: 3 << 20} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &sources{}
			root := t.TempDir()
			s := newStore(t, root, opts{src: src})
			source := src.add("img", tc.r)
			source.SHA256 = tc.sha256
			im, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "img", SizeBytes: tc.size, Source: source})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if im.SHA256 != good || im.Source != source {
					t.Errorf("image = %+v, want sha256 %s and source %+v", im, good, source)
				}
				if got := entries(t, filepath.Join(root, "images", "default")); got != "img.raw" {
					t.Errorf("images/default holds %q, want img.raw", got)
				}
				return
			}
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("EnsureImage: %v, want an error (%v)", err, tc.wantErr)
			}
			if _, err := s.StatImage(ctx, "default", "img"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("StatImage after a failed import: %v, want ErrNotFound", err)
			}
			if got := entries(t, filepath.Join(root, "images", "default")); got != "" {
				t.Errorf("a failed import left %q in images/default", got)
			}
		})
	}
}

func TestImportCancelled(t *testing.T) {
	root := t.TempDir()
	src := &sources{}
	s := newStore(t, root, opts{src: src})
	cctx, cancel := context.WithCancel(ctx)
	source := src.add("img", func() io.Reader {
		return io.MultiReader(randomData(1, 4<<20), readerFunc(func(b []byte) (int, error) {
			cancel()
			return copy(b, make([]byte, len(b))), nil
		}))
	})
	_, err := s.EnsureImage(cctx, store.ImageSpec{Project: "default", Name: "img", SizeBytes: 64 << 20, Source: source})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("EnsureImage with a cancelled context: %v, want context.Canceled", err)
	}
	if got := entries(t, filepath.Join(root, "images", "default")); got != "" {
		t.Errorf("a cancelled import left %q", got)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// TestMetadataSurvivesRestart: sources, checksums, a disk's image and
// clone mode are read back by a new store on the same root.
func TestMetadataSurvivesRestart(t *testing.T) {
	root := mountStore(t, looptest.XFS, 512<<20)
	src := &sources{}
	s := newStore(t, root, opts{src: src})
	im := mustImport(t, s, src, "golden", 4<<20, func() io.Reader { return randomData(3, 4<<20) })
	d, err := s.Clone(ctx, "default", "golden", "node-01", "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := newStore(t, root, opts{src: src})
	if l, err := s2.ListImages(ctx); err != nil || len(l) != 1 || l[0] != im {
		t.Errorf("ListImages after restart = %+v, %v; want [%+v]", l, err, im)
	}
	if l, err := s2.ListDisks(ctx); err != nil || len(l) != 1 || l[0] != d {
		t.Errorf("ListDisks after restart = %+v, %v; want [%+v]", l, err, d)
	}
	opened := src.count()
	if again, err := s2.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "golden", SizeBytes: 4 << 20, Source: im.Source}); err != nil || again != im {
		t.Errorf("EnsureImage after restart = %+v, %v; want %+v", again, err, im)
	}
	if src.count() != opened {
		t.Errorf("EnsureImage of a held image fetched the source again")
	}
}

// TestCrashLeftovers: temp files from an interrupted import or clone are
// removed at start; everything else stays.
func TestCrashLeftovers(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root, opts{})
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "golden", SizeBytes: 1 << 20, Source: store.Source{Kind: store.SourceBlank}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Clone(ctx, "default", "golden", "node-01", ""); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, p := range []string{".sanboot-tmp-1", "images/default/.sanboot-tmp-2", "disks/default/.sanboot-tmp-3", "disks/default/notes.txt"} {
		if err := os.WriteFile(filepath.Join(root, p), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s = newStore(t, root, opts{})
	for dir, want := range map[string]string{"": "disks images", "images/default": "golden.raw", "disks/default": "node-01.raw notes.txt"} {
		if got := entries(t, filepath.Join(root, dir)); got != want {
			t.Errorf("%s/%s holds %q, want %q", root, dir, got, want)
		}
	}
	if l, err := s.ListDisks(ctx); err != nil || len(l) != 1 {
		t.Errorf("ListDisks = %+v, %v; want node-01 only", l, err)
	}
}

func TestModes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s := newStore(t, root, opts{})
	im, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "golden", SizeBytes: 1 << 20, Source: store.Source{Kind: store.SourceBlank}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Clone(ctx, "default", "golden", "node-01", "")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		root: 0o750 | os.ModeDir, filepath.Join(root, "images"): 0o750 | os.ModeDir, filepath.Join(root, "disks", "default"): 0o750 | os.ModeDir,
		im.Path: 0o640, d.Path: 0o640,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
	if want := filepath.Join(root, "images", "default", "golden.raw"); im.Path != want {
		t.Errorf("image path %s, want %s", im.Path, want)
	}
	if want := filepath.Join(root, "disks", "default", "node-01.raw"); d.Path != want {
		t.Errorf("disk path %s, want %s", d.Path, want)
	}
}

// TestNoSymlinksFollowed: links planted in the store never lead the store
// out of its root, neither for writing nor for reading.
func TestNoSymlinksFollowed(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	s := newStore(t, root, opts{})
	blank := store.Source{Kind: store.SourceBlank}
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "golden", SizeBytes: 1 << 20, Source: blank}); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A project directory that is a link to outside.
	if err := os.Symlink(outside, filepath.Join(root, "images", "evil")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "evil", Name: "x", SizeBytes: 1 << 20, Source: blank}); err == nil {
		t.Error("EnsureImage through a linked project directory succeeded")
	}
	// A disk that is a link to a file outside.
	if err := os.MkdirAll(filepath.Join(root, "disks", "default"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(root, "disks", "default", "node-01.raw")); err != nil {
		t.Fatal(err)
	}
	if d, err := s.StatDisk(ctx, "default", "node-01"); err == nil {
		t.Errorf("StatDisk of a link = %+v, want an error", d)
	}
	if d, err := s.Clone(ctx, "default", "golden", "node-01", ""); err == nil {
		t.Errorf("Clone over a link = %+v, want an error", d)
	}
	if l, err := s.ListDisks(ctx); err != nil || len(l) != 0 {
		t.Errorf("ListDisks = %+v, %v; want the link skipped", l, err)
	}
	if err := s.DeleteDisk(ctx, "default", "node-01"); err != nil {
		t.Errorf("DeleteDisk of a link: %v", err)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "keep" {
		t.Errorf("the file outside the store: %q, %v; want it untouched", b, err)
	}
	if got := entries(t, outside); got != "secret" {
		t.Errorf("outside the store: %q, want only secret", got)
	}
}

// TestSnapshotAndCopy makes images from a node's disk and from another
// image, with reflink (XFS) and by copying (ext4).
func TestSnapshotAndCopy(t *testing.T) {
	for _, fs := range []looptest.FS{looptest.XFS, looptest.Ext4} {
		t.Run(string(fs), func(t *testing.T) {
			src := &sources{}
			s := newStore(t, mountStore(t, fs, 512<<20), opts{src: src})
			const size = 16 << 20
			im := mustImport(t, s, src, "golden", size, func() io.Reader { return randomData(5, size) })
			d, err := s.Clone(ctx, "default", "golden", "node-01", "")
			if err != nil {
				t.Fatal(err)
			}
			// The node writes to its disk.
			f, err := os.OpenFile(d.Path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte("node"), 1024), 1<<20); err != nil {
				t.Fatal(err)
			}
			f.Close()
			want := fileSHA(t, d.Path)

			snapSrc := store.Source{Kind: store.SourceSnapshot, Node: "node-01"}
			snap, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "snap", SizeBytes: size, Source: snapSrc})
			if err != nil {
				t.Fatal(err)
			}
			if got := fileSHA(t, snap.Path); got != want || snap.Source != snapSrc {
				t.Errorf("snapshot %+v has sha256 %s, want the disk's %s", snap, got, want)
			}
			if fileSHA(t, im.Path) != im.SHA256 {
				t.Error("writing to the disk changed the image")
			}
			// A later write to the disk does not change the snapshot.
			f, _ = os.OpenFile(d.Path, os.O_WRONLY, 0)
			f.WriteAt([]byte("later"), 0)
			f.Close()
			if got := fileSHA(t, snap.Path); got != want {
				t.Error("writing to the disk changed its snapshot")
			}

			cp, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "copy", SizeBytes: size, Source: store.Source{Kind: store.SourceCopy, Image: "golden"}})
			if err != nil {
				t.Fatal(err)
			}
			if cp.SHA256 != im.SHA256 || fileSHA(t, cp.Path) != im.SHA256 {
				t.Errorf("copy %+v: want the bytes and sha256 of %s", cp, im.SHA256)
			}
			big, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "bigger", SizeBytes: 2 * size, Source: store.Source{Kind: store.SourceCopy, Image: "golden"}})
			if err != nil {
				t.Fatal(err)
			}
			if big.SizeBytes != 2*size || big.SHA256 != "" {
				t.Errorf("grown copy %+v: want %d bytes and no sha256 (the bytes differ from the source's)", big, 2*size)
			}
			bf, err := os.Open(big.Path)
			if err != nil {
				t.Fatal(err)
			}
			head := sha(t, io.LimitReader(bf, size))
			bf.Close()
			if head != im.SHA256 {
				t.Error("the grown copy does not start with the image's bytes")
			}
			if got := allocated(t, big.Path); got > 2*size-size/2 {
				t.Errorf("the grown copy takes %d bytes: want its second half a hole", got)
			}
			for _, bad := range []struct {
				name string
				spec store.ImageSpec
				want error
			}{
				{"smaller than the source", store.ImageSpec{Project: "default", Name: "small", SizeBytes: size / 2, Source: store.Source{Kind: store.SourceCopy, Image: "golden"}}, nil},
				{"snapshot of a missing disk", store.ImageSpec{Project: "default", Name: "s2", SizeBytes: size, Source: store.Source{Kind: store.SourceSnapshot, Node: "nope"}}, store.ErrNotFound},
				{"copy of a missing image", store.ImageSpec{Project: "default", Name: "c2", SizeBytes: size, Source: store.Source{Kind: store.SourceCopy, Image: "nope"}}, store.ErrNotFound},
				{"copy from another project", store.ImageSpec{Project: "other", Name: "c3", SizeBytes: size, Source: store.Source{Kind: store.SourceCopy, Image: "golden"}}, store.ErrNotFound},
			} {
				if _, err := s.EnsureImage(ctx, bad.spec); err == nil || (bad.want != nil && !errors.Is(err, bad.want)) {
					t.Errorf("%s: %v, want an error (%v)", bad.name, err, bad.want)
				}
				if _, err := s.StatImage(ctx, bad.spec.Project, bad.spec.Name); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("%s left an image: %v", bad.name, err)
				}
			}
		})
	}
}

// TestNoSpace: on a small file system an import larger than the free
// space and a copy-mode clone larger than it are refused before anything
// is written.
func TestNoSpace(t *testing.T) {
	root := mountStore(t, looptest.Ext4, 64<<20)
	src := &sources{}
	s := newStore(t, root, opts{src: src})
	if s.CloneMode() != store.CloneCopy {
		t.Fatalf("clone mode on ext4 = %q, want copy", s.CloneMode())
	}
	c, err := s.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	big := (c.FreeBytes/512 + 1) * 512
	_, err = s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "huge", SizeBytes: big, Source: src.add("huge", func() io.Reader { return zeros{} })})
	if !errors.Is(err, store.ErrNoSpace) {
		t.Errorf("import of %d bytes with %d free: %v, want ErrNoSpace", big, c.FreeBytes, err)
	}
	if src.count() != 0 {
		t.Errorf("the refused import opened its source")
	}

	// An image with data that fits, and a copy of it that does not.
	size := (c.FreeBytes * 2 / 3) &^ (1<<20 - 1)
	mustImport(t, s, src, "golden", size, func() io.Reader { return randomData(9, size) })
	left := free(t, s)
	if left >= size {
		t.Fatalf("%d bytes free after importing %d of %d: the test needs less", left, size, c.FreeBytes)
	}
	if _, err := s.Clone(ctx, "default", "golden", "node-01", ""); !errors.Is(err, store.ErrNoSpace) {
		t.Errorf("copy clone of %d bytes with %d free: %v, want ErrNoSpace", size, left, err)
	}
	if got := entries(t, filepath.Join(root, "disks", "default")); got != "" {
		t.Errorf("a refused clone left %q", got)
	}
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "copy", SizeBytes: size, Source: store.Source{Kind: store.SourceCopy, Image: "golden"}}); !errors.Is(err, store.ErrNoSpace) {
		t.Errorf("copy of an image of %d bytes with %d free: %v, want ErrNoSpace", size, left, err)
	}
}

func TestHTTPOpener(t *testing.T) {
	body := bytes.Repeat([]byte("sanboot!"), 1<<17) // 1 MiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/golden.raw" {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	s, err := filestore.New(filestore.Options{Root: t.TempDir(), Log: slog.New(slog.DiscardHandler), Open: filestore.HTTPOpener(srv.Client())})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := sha(t, bytes.NewReader(body))
	im, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "golden", SizeBytes: int64(len(body)),
		Source: store.Source{Kind: store.SourceURL, URL: srv.URL + "/golden.raw", SHA256: want}})
	if err != nil || im.SHA256 != want {
		t.Fatalf("EnsureImage from %s = %+v, %v; want sha256 %s", srv.URL, im, err, want)
	}
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "missing", SizeBytes: 512,
		Source: store.Source{Kind: store.SourceURL, URL: srv.URL + "/missing.raw"}}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("EnsureImage of a 404 url: %v, want an error that says 404", err)
	}
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "up", SizeBytes: 512,
		Source: store.Source{Kind: store.SourceUpload, UploadID: "u1"}}); err == nil {
		t.Error("EnsureImage of an upload with the HTTP opener succeeded")
	}
}

// TestConcurrentCallers: many callers asking for the same image and the
// same disk at once get one image and one disk, all the same.
func TestConcurrentCallers(t *testing.T) {
	s := newStore(t, t.TempDir(), opts{})
	spec := store.ImageSpec{Project: "default", Name: "golden", SizeBytes: 8 << 20, Source: store.Source{Kind: store.SourceBlank}}
	const n = 8
	ims := make([]store.Image, n)
	ds := make([]store.Disk, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if ims[i], errs[i] = s.EnsureImage(ctx, spec); errs[i] != nil {
				return
			}
			ds[i], errs[i] = s.Clone(ctx, "default", "golden", "node-01", "")
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if ims[i] != ims[0] || ds[i] != ds[0] {
			t.Errorf("caller %d got %+v, %+v; caller 0 %+v, %+v", i, ims[i], ds[i], ims[0], ds[0])
		}
	}
	if got := entries(t, filepath.Join(s.Root(), "disks", "default")); got != "node-01.raw" {
		t.Errorf("disks/default holds %q, want node-01.raw", got)
	}
}
