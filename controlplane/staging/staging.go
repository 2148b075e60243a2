// Package staging keeps image uploads on a control-plane member's disk
// until the agents have fetched them.
//
// Layout, in one directory (<data-dir>/uploads by default):
//
//	<id>          a staged upload: raw image bytes, immutable, mode 0640
//	.tmp-<rand>   an upload being written (or converted); never served
//
// An upload is written to a temp file, fsynced, checked (size and sha256
// against what the client announced), converted to raw with
// `qemu-img convert -O raw` when it is qcow2 (magic "QFI\xfb"), hashed, and
// renamed to its id; the directory is then fsynced. An upload that fails or
// is interrupted at any point leaves nothing behind, and temp files a crash
// left are removed when the area is opened.
//
// Ids are 32 lowercase hex digits (16 random bytes). What an upload is for
// is not recorded here: the garbage collector (GC, in gc.go), which the
// API server runs, decides from the image specs in etcd when a staged
// upload may go.
package staging

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors of the area, wrapped; test with errors.Is.
var (
	// ErrNotFound: no staged upload has that id (never staged here, or
	// garbage-collected).
	ErrNotFound = errors.New("upload not found")
	// ErrNoSpace: the staging directory's file system is too full.
	ErrNoSpace = errors.New("not enough free space to stage the upload")
	// ErrInvalid: the bytes are not an acceptable image (size, checksum,
	// a qcow2 with a backing file, ...). The message says what.
	ErrInvalid = errors.New("the upload is not an acceptable image")
	// ErrNoQemuImg: a qcow2 upload needs qemu-img, which is not installed.
	ErrNoQemuImg = errors.New("qemu-img is not installed on this control-plane member: install qemu-utils (apt-get install qemu-utils) to upload qcow2 images, or convert the image to raw first (qemu-img convert -O raw in.qcow2 out.raw)")
)

const (
	tmpPrefix = ".tmp-"
	dirMode   = 0o750
	fileMode  = 0o640
	// SectorSize: images are whole 512-byte sectors.
	SectorSize = 512
)

// qcow2Magic starts every qcow2 file.
var qcow2Magic = []byte("QFI\xfb")

// Options configure an Area.
type Options struct {
	// QemuImg is the qemu-img program (default "qemu-img", found in PATH).
	QemuImg string
	Log     *slog.Logger
}

// Area is one staging directory. Its methods are safe for concurrent use.
type Area struct {
	dir     string
	qemuImg string
	log     *slog.Logger
}

// Open creates dir (0750) if needed, removes the temp files an earlier
// process left there, and returns the area. dir must be absolute (qemu-img
// would read a relative name with a colon as a protocol).
func Open(dir string, opts Options) (*Area, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("upload staging directory %q must be an absolute path", dir)
	}
	if opts.QemuImg == "" {
		opts.QemuImg = "qemu-img"
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("create upload staging directory: %w: check --data-dir and its permissions", err)
	}
	a := &Area{dir: filepath.Clean(dir), qemuImg: opts.QemuImg, log: opts.Log.With("uploads", dir)}
	names, err := a.names()
	if err != nil {
		return nil, err
	}
	n := 0
	for _, name := range names {
		if strings.HasPrefix(name, tmpPrefix) {
			if err := os.Remove(filepath.Join(a.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("remove a temp file an interrupted upload left: %w: remove it by hand", err)
			}
			n++
		}
	}
	if n > 0 {
		a.log.Info("removed temp files left by interrupted uploads", "count", n)
	}
	return a, nil
}

// Dir is the staging directory.
func (a *Area) Dir() string { return a.dir }

// ValidID reports whether id has the form of an upload id, so that it may
// become a path.
func ValidID(id string) bool {
	return len(id) == 32 && strings.Trim(id, "0123456789abcdef") == ""
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Writer receives the bytes of one upload. Call Commit or Abort.
type Writer struct {
	a    *Area
	f    *os.File
	h    hash.Hash
	n    int64
	done bool
}

// Create starts an upload. size is what the client announced (0 if
// unknown); when the file system has less free space it is ErrNoSpace.
func (a *Area) Create(size int64) (*Writer, error) {
	if size > 0 {
		free, err := a.Free()
		if err != nil {
			return nil, err
		}
		if size > free {
			return nil, fmt.Errorf("the upload is %d bytes and %s has %d free: free space there or upload to another member: %w",
				size, a.dir, free, ErrNoSpace)
		}
	}
	f, err := os.OpenFile(filepath.Join(a.dir, tmpPrefix+newID()), os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return nil, fmt.Errorf("create a temp file in %s: %w", a.dir, err)
	}
	return &Writer{a: a, f: f, h: sha256.New()}, nil
}

// Free is the free space of the staging directory's file system.
func (a *Area) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(a.dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", a.dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// Write appends p to the upload.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, noSpace(fmt.Errorf("write the upload after %d bytes: %w", w.n, err))
	}
	return n, nil
}

// Written is the number of bytes received so far.
func (w *Writer) Written() int64 { return w.n }

// Abort removes what was written. It is safe after Commit (then it does
// nothing).
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// Result is a staged upload.
type Result struct {
	ID string
	// SHA256 of the raw image as staged (lowercase hex).
	SHA256 string
	Size   int64
	// Format is "raw", or "qcow2" when the upload was converted.
	Format string
}

// Commit finishes the upload: the bytes received must be wantSize long
// (when wantSize > 0) and have wantSHA256 (when not empty), else
// ErrInvalid. A qcow2 upload is converted to raw. The result must be a
// positive whole number of 512-byte sectors. On success the upload is
// staged under a new id; on any failure nothing remains.
func (w *Writer) Commit(ctx context.Context, wantSize int64, wantSHA256 string) (Result, error) {
	defer w.Abort()
	sent := hex.EncodeToString(w.h.Sum(nil))
	if wantSize > 0 && w.n != wantSize {
		return Result{}, fmt.Errorf("received %d bytes, the upload announced %d: upload again: %w", w.n, wantSize, ErrInvalid)
	}
	if wantSHA256 != "" && !strings.EqualFold(wantSHA256, sent) {
		return Result{}, fmt.Errorf("the bytes received have sha256 %s, the upload announced %s: upload again: %w", sent, wantSHA256, ErrInvalid)
	}
	if w.n == 0 {
		return Result{}, fmt.Errorf("the upload is empty: %w", ErrInvalid)
	}
	if err := w.f.Sync(); err != nil {
		return Result{}, noSpace(fmt.Errorf("fsync the upload: %w", err))
	}
	magic := make([]byte, len(qcow2Magic))
	if _, err := w.f.ReadAt(magic, 0); err != nil && !errors.Is(err, io.EOF) {
		return Result{}, fmt.Errorf("read the upload back: %w", err)
	}
	res := Result{ID: newID(), SHA256: sent, Size: w.n, Format: "raw"}
	src := w.f.Name()
	if slices.Equal(magic, qcow2Magic) {
		raw, err := w.a.convert(ctx, src)
		if err != nil {
			return Result{}, err
		}
		// The qcow2 goes; the raw temp takes its place (Abort removes
		// whatever is left under either name).
		w.f.Close()
		os.Remove(src)
		f, err := os.Open(raw)
		if err != nil {
			os.Remove(raw)
			return Result{}, fmt.Errorf("open the converted image: %w", err)
		}
		w.f = f
		src = raw
		sum, size, err := hashFile(ctx, f)
		if err != nil {
			return Result{}, err
		}
		res.SHA256, res.Size, res.Format = sum, size, "qcow2"
	}
	if res.Size%SectorSize != 0 {
		return Result{}, fmt.Errorf("the image is %d bytes, not a whole number of 512-byte sectors: pad it (truncate -s %d FILE) and upload again: %w",
			res.Size, (res.Size/SectorSize+1)*SectorSize, ErrInvalid)
	}
	if err := os.Rename(src, filepath.Join(w.a.dir, res.ID)); err != nil {
		return Result{}, fmt.Errorf("stage the upload: %w", err)
	}
	w.done = true
	w.f.Close()
	if err := syncDir(w.a.dir); err != nil {
		os.Remove(filepath.Join(w.a.dir, res.ID))
		return Result{}, err
	}
	w.a.log.Info("upload staged", "id", res.ID, "bytes", res.Size, "sha256", res.SHA256, "format", res.Format)
	return res, nil
}

func hashFile(ctx context.Context, f *os.File) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, &ctxReader{ctx: ctx, r: f})
	if err != nil {
		return "", 0, fmt.Errorf("hash the converted image: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// noSpace marks an ENOSPC or EDQUOT error as ErrNoSpace.
func noSpace(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%w: free space in the staging directory or upload to another member: %w", err, ErrNoSpace)
	}
	return err
}

// Open opens a staged upload for reading.
func (a *Area) Open(id string) (*os.File, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%q is not an upload id (32 hex digits): %w", id, ErrNotFound)
	}
	f, err := os.OpenFile(filepath.Join(a.dir, id), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open upload %s: %w", id, err)
	}
	return f, nil
}

// Entry is a staged upload as listed.
type Entry struct {
	ID   string
	Size int64
	// Staged is when the upload was staged (the file's modification time).
	Staged time.Time
}

// List returns the staged uploads (not those being written), by id.
func (a *Area) List() ([]Entry, error) {
	names, err := a.names()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, n := range names {
		if !ValidID(n) {
			continue
		}
		fi, err := os.Lstat(filepath.Join(a.dir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stat upload %s: %w", n, err)
		}
		if fi.Mode().IsRegular() {
			out = append(out, Entry{ID: n, Size: fi.Size(), Staged: fi.ModTime()})
		}
	}
	return out, nil
}

// Remove deletes a staged upload; a missing one is not an error. Readers
// that have it open keep reading it.
func (a *Area) Remove(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("%q is not an upload id", id)
	}
	if err := os.Remove(filepath.Join(a.dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove upload %s: %w", id, err)
	}
	return nil
}

func (a *Area) names() ([]string, error) {
	d, err := os.Open(a.dir)
	if err != nil {
		return nil, fmt.Errorf("open upload staging directory: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read upload staging directory %s: %w", a.dir, err)
	}
	slices.Sort(names)
	return names, nil
}
