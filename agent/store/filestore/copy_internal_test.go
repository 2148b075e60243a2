package filestore

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func blocks(t *testing.T, f *os.File) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// sparseFile makes a file of size bytes with 4 KiB of data at each offset
// in at and holes elsewhere.
func sparseFile(t *testing.T, size int64, at ...int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "src"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, a := range at {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, blockSize), a); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return f
}

func sameBytes(t *testing.T, a, b *os.File, n int64) {
	t.Helper()
	ba, bb := make([]byte, n), make([]byte, n)
	if _, err := a.ReadAt(ba, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadAt(bb, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ba, bb) {
		t.Error("the copy's bytes differ from the source's")
	}
}

// TestCopiesKeepHoles runs both copy paths: the SEEK_DATA/SEEK_HOLE one and
// the zero-detecting fallback used where SEEK_DATA is missing.
func TestCopiesKeepHoles(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		name string
		copy func(ctx context.Context, dst, src *os.File) error
	}{
		{"seek data", func(ctx context.Context, dst, src *os.File) error { return sparseCopy(ctx, dst, src, size, size) }},
		{"zero detection", func(ctx context.Context, dst, src *os.File) error {
			if err := dst.Truncate(size); err != nil {
				return err
			}
			return zeroSkipCopy(ctx, dst, src, 0, size)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := sparseFile(t, size, 0, 5<<20, 5<<20+blockSize, size-blockSize)
			dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			if err := tc.copy(context.Background(), dst, src); err != nil {
				t.Fatal(err)
			}
			if err := dst.Sync(); err != nil {
				t.Fatal(err)
			}
			fi, _ := dst.Stat()
			if fi.Size() != size {
				t.Errorf("copy size %d, want %d", fi.Size(), size)
			}
			if got, want := blocks(t, dst), blocks(t, src); got > want {
				t.Errorf("the copy takes %d bytes, the source %d: holes were filled", got, want)
			}
			sameBytes(t, src, dst, size)
		})
	}
}

func TestSparseCopyGrows(t *testing.T) {
	src := sparseFile(t, 1<<20, 0)
	dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := sparseCopy(context.Background(), dst, src, 1<<20, 4<<20); err != nil {
		t.Fatal(err)
	}
	fi, _ := dst.Stat()
	if fi.Size() != 4<<20 {
		t.Errorf("size %d, want 4 MiB", fi.Size())
	}
	sameBytes(t, src, dst, 1<<20)
}

func TestCopyHonoursContext(t *testing.T) {
	src := sparseFile(t, 8<<20, 0, 4<<20)
	dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sparseCopy(ctx, dst, src, 8<<20, 8<<20); err == nil {
		t.Error("sparseCopy with a cancelled context succeeded")
	}
	if err := zeroSkipCopy(ctx, dst, src, 0, 8<<20); err == nil {
		t.Error("zeroSkipCopy with a cancelled context succeeded")
	}
}

func TestWriteNonZero(t *testing.T) {
	data := func(n int) []byte { return bytes.Repeat([]byte{1}, n) }
	zero := func(n int) []byte { return make([]byte, n) }
	for _, tc := range []struct {
		name string
		buf  []byte
	}{
		{"all zero", zero(4 * blockSize)},
		{"all data", data(4 * blockSize)},
		{"data zero data", bytes.Join([][]byte{data(blockSize), zero(2 * blockSize), data(blockSize)}, nil)},
		{"zero then a short data tail", append(zero(blockSize), data(100)...)},
		{"one non-zero byte in a block", append(zero(blockSize+7), append([]byte{9}, zero(blockSize-8)...)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			const off = 3 * blockSize
			if err := f.Truncate(off + int64(len(tc.buf))); err != nil {
				t.Fatal(err)
			}
			if err := writeNonZero(f, tc.buf, off); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(tc.buf))
			if _, err := f.ReadAt(got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.buf) {
				t.Error("read back differs")
			}
			f.Sync()
			nonZero := int64(0)
			for i := 0; i < len(tc.buf); i += blockSize {
				if !bytes.Equal(tc.buf[i:min(i+blockSize, len(tc.buf))], zeroBlock[:min(blockSize, len(tc.buf)-i)]) {
					nonZero += blockSize
				}
			}
			if b := blocks(t, f); b > nonZero {
				t.Errorf("file takes %d bytes, its data blocks %d", b, nonZero)
			}
		})
	}
}

// TestPublishNeverReplaces: the rename into place fails on an existing
// name and leaves its bytes alone.
func TestPublishNeverReplaces(t *testing.T) {
	root := t.TempDir()
	dir, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if err := os.WriteFile(filepath.Join(root, "node.raw"), []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	f, tmp, err := createTemp(dir, root)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("other")
	f.Close()
	if err := publish(dir, tmp, "node.raw"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("publish over an existing file: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "node.raw")); string(b) != "data" {
		t.Errorf("the existing file now holds %q", b)
	}
	if err := publish(dir, tmp, "new.raw"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "new.raw")); string(b) != "other" {
		t.Errorf("new.raw holds %q, want other", b)
	}
}
