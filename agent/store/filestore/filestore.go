package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/internal/keylock"
)

const (
	imagesDir = "images"
	disksDir  = "disks"
	rawExt    = ".raw"
	// tmpPrefix starts the name of every file being written; such files
	// are never listed and are removed at start.
	tmpPrefix = ".sanboot-tmp-"
	dirMode   = 0o750
	fileMode  = 0o640
)

// Opener returns the bytes of an upload or url source. The store reads
// exactly the image's size from it and closes it.
type Opener func(ctx context.Context, src store.Source) (io.ReadCloser, error)

// Options configure a Store.
type Options struct {
	// Root is the store directory, an absolute clean path such as
	// /var/lib/sanboot. It is created (0750) if missing.
	Root string
	// Open fetches upload and url sources. Nil means HTTPOpener(nil): url
	// sources are fetched with HTTP GET, upload sources are refused.
	Open Opener
	// Log receives the start-up warning (no reflink) and notes on cleanup;
	// nil means slog.Default().
	Log *slog.Logger
}

// Store is the file store. Its methods are safe for concurrent use; call
// Close when done to release the root's lock.
type Store struct {
	root    string
	rootDir *os.File // open for the store's life; holds the flock
	mode    store.CloneMode
	fsName  string
	open    Opener
	log     *slog.Logger
	locks   keylock.Map

	mu       sync.Mutex
	reserved int64 // bytes promised to imports and clones in flight
}

var _ store.Store = (*Store)(nil)

// New opens (or creates) the store at opts.Root: it locks the root, makes
// images/ and disks/, removes temp files a crash left behind, and probes
// once whether the file system can reflink.
func New(opts Options) (*Store, error) {
	if !filepath.IsAbs(opts.Root) || filepath.Clean(opts.Root) != opts.Root {
		return nil, fmt.Errorf("store root %q: use an absolute, clean path such as /var/lib/sanboot", opts.Root)
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Open == nil {
		opts.Open = HTTPOpener(nil)
	}
	if err := os.MkdirAll(opts.Root, dirMode); err != nil {
		return nil, fmt.Errorf("create store root: %w: check the path and its permissions", err)
	}
	fd, err := unix.Open(opts.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open store root %s: %w", opts.Root, err)
	}
	rootDir := os.NewFile(uintptr(fd), opts.Root)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		rootDir.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("store %s is in use by another process (another sanboot-agent?): give every agent its own store directory", opts.Root)
		}
		return nil, fmt.Errorf("lock store root %s: %w", opts.Root, err)
	}
	s := &Store{root: opts.Root, rootDir: rootDir, open: opts.Open, log: opts.Log.With("store", opts.Root)}
	if err := s.start(); err != nil {
		rootDir.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) start() error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(s.rootDir.Fd()), &sfs); err != nil {
		return fmt.Errorf("statfs %s: %w", s.root, err)
	}
	s.fsName = fsName(sfs.Type)
	for _, kind := range []string{imagesDir, disksDir} {
		if err := mkdirAt(s.rootDir, s.root, kind); err != nil {
			return err
		}
	}
	if err := s.removeTemps(); err != nil {
		return err
	}
	mode, err := probe(s.rootDir, s.root)
	if err != nil {
		return err
	}
	s.mode = mode
	if mode == store.CloneCopy {
		s.log.Warn("the store's file system cannot reflink, so every clone is a full (sparse) copy that takes time and "+
			"space: put the store on XFS made with reflink=1 (mkfs.xfs -m reflink=1) or on btrfs",
			"fs", s.fsName, "cloneMode", mode)
	} else {
		s.log.Info("store ready", "fs", s.fsName, "cloneMode", mode)
	}
	return nil
}

// Close releases the root's lock. The store must not be used afterwards.
func (s *Store) Close() error { return s.rootDir.Close() }

// Root is the store directory.
func (s *Store) Root() string { return s.root }

// CloneMode implements store.Store: reflink or copy, as probed at start.
func (s *Store) CloneMode() store.CloneMode { return s.mode }

// Capacity implements store.Store with statfs of the root: the file
// system's size and the bytes an unprivileged writer may still use.
func (s *Store) Capacity(ctx context.Context) (store.Capacity, error) {
	if err := ctx.Err(); err != nil {
		return store.Capacity{}, err
	}
	return s.statfs()
}

func (s *Store) statfs() (store.Capacity, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(s.rootDir.Fd()), &st); err != nil {
		return store.Capacity{}, fmt.Errorf("statfs %s: %w", s.root, err)
	}
	bs := st.Frsize
	if bs <= 0 {
		bs = st.Bsize
	}
	return store.Capacity{CapacityBytes: int64(st.Blocks) * bs, FreeBytes: int64(st.Bavail) * bs}, nil
}

// reserve promises need bytes to an operation, or fails with ErrNoSpace
// when the free space less what is already promised is smaller. The
// returned func gives the promise back; call it when the bytes are written
// (statfs then counts them).
func (s *Store) reserve(what string, need int64) (func(), error) {
	c, err := s.statfs()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if free := c.FreeBytes - s.reserved; need > free {
		return nil, store.NoSpace(what, need, max(free, 0))
	}
	s.reserved += need
	return sync.OnceFunc(func() {
		s.mu.Lock()
		s.reserved -= need
		s.mu.Unlock()
	}), nil
}

// removeTemps removes the temp files a crash left in the root and in every
// project directory.
func (s *Store) removeTemps() error {
	n, err := removeTempsIn(s.rootDir, s.root)
	if err != nil {
		return err
	}
	for _, kind := range []string{imagesDir, disksDir} {
		kd, err := openDirAt(s.rootDir, s.root, kind)
		if err != nil {
			return err
		}
		names, err := kd.Readdirnames(-1)
		if err != nil {
			kd.Close()
			return fmt.Errorf("read %s: %w", kd.Name(), err)
		}
		for _, p := range names {
			if store.ValidateNames(p, "x") != nil {
				continue
			}
			pd, err := openDirAt(kd, kd.Name(), p)
			if err != nil {
				s.log.Warn("skipping an entry of the store that is not a directory", "path", filepath.Join(kd.Name(), p), "err", err)
				continue
			}
			m, err := removeTempsIn(pd, pd.Name())
			pd.Close()
			if err != nil {
				kd.Close()
				return err
			}
			n += m
		}
		kd.Close()
	}
	if n > 0 {
		s.log.Info("removed temp files left by an interrupted import or clone", "count", n)
	}
	return nil
}

func removeTempsIn(dir *os.File, path string) (int, error) {
	if _, err := dir.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	n := 0
	for _, name := range names {
		if !strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, fmt.Errorf("remove temp file %s: %w: remove it by hand", filepath.Join(path, name), err)
		}
		n++
	}
	return n, nil
}

// probe finds out whether the file system under dir can reflink, and
// checks that it keeps user extended attributes (the store's metadata).
func probe(dir *os.File, path string) (store.CloneMode, error) {
	src, srcName, err := createTemp(dir, path)
	if err != nil {
		return "", err
	}
	defer func() { src.Close(); unix.Unlinkat(int(dir.Fd()), srcName, 0) }()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		return "", fmt.Errorf("probe the store's file system: %w", err)
	}
	if err := writeMeta(src, meta{Kind: "probe"}); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return "", fmt.Errorf("the file system of %s keeps no user extended attributes, where the store keeps its "+
				"metadata: put the store on XFS (reflink=1), btrfs or ext4: %w", path, err)
		}
		return "", err
	}
	dst, dstName, err := createTemp(dir, path)
	if err != nil {
		return "", err
	}
	defer func() { dst.Close(); unix.Unlinkat(int(dir.Fd()), dstName, 0) }()
	err = unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	switch {
	case err == nil:
		return store.CloneReflink, nil
	case noReflink(err):
		return store.CloneCopy, nil
	default:
		return "", fmt.Errorf("probe reflink (FICLONE) in %s: %w", path, err)
	}
}

// noReflink tells the errors of FICLONE that mean "this file system (or
// this pair of files) cannot share blocks" from real failures.
func noReflink(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.EINVAL, unix.EXDEV, unix.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func fsName(magic int64) string {
	switch magic {
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	}
	return fmt.Sprintf("%#x", magic)
}
