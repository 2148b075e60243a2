package filestore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// errNotRegular: a store entry is a link, a directory or a device where a
// regular file belongs.
var errNotRegular = errors.New("not a regular file")

// The helpers here work on one path component at a time, relative to an
// open directory, and never follow a symbolic link: names are validated
// before they get here, so a component is never "..", "." or has a "/".

// openDirAt opens the directory name in dir (whose path is path). A
// symbolic link is an error (ELOOP or ENOTDIR), a missing one is
// fs.ErrNotExist.
func openDirAt(dir *os.File, path, name string) (*os.File, error) {
	full := filepath.Join(path, name)
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%s is a symbolic link or not a directory; the store follows no links: remove it or move the store", full)
		}
		return nil, &os.PathError{Op: "open", Path: full, Err: err}
	}
	return os.NewFile(uintptr(fd), full), nil
}

// mkdirAt makes the directory name in dir (0750) unless it exists, and
// makes the new entry durable.
func mkdirAt(dir *os.File, path, name string) error {
	err := unix.Mkdirat(int(dir.Fd()), name, dirMode)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create directory %s: %w: check the store's permissions and free space", filepath.Join(path, name), err)
	}
	// The umask may have taken bits away; the mode is the store's choice.
	d, err := openDirAt(dir, path, name)
	if err != nil {
		return err
	}
	err = d.Chmod(dirMode)
	d.Close()
	if err != nil {
		return fmt.Errorf("chmod %s: %w", filepath.Join(path, name), err)
	}
	return syncDir(dir)
}

// openDir opens <root>/<kind>/<project>. With create it makes the project
// directory when missing; without, a missing one is fs.ErrNotExist.
func (s *Store) openDir(kind, project string, create bool) (*os.File, error) {
	kd, err := openDirAt(s.rootDir, s.root, kind)
	if errors.Is(err, fs.ErrNotExist) && create { // removed by hand since start
		if err := mkdirAt(s.rootDir, s.root, kind); err != nil {
			return nil, err
		}
		kd, err = openDirAt(s.rootDir, s.root, kind)
	}
	if err != nil {
		return nil, err
	}
	defer kd.Close()
	if create {
		if err := mkdirAt(kd, kd.Name(), project); err != nil {
			return nil, err
		}
	}
	return openDirAt(kd, kd.Name(), project)
}

// openRegular opens the regular file name in dir read-only. A symbolic
// link or anything else that is not a regular file is an error; a missing
// file is fs.ErrNotExist.
func openRegular(dir *os.File, name string) (*os.File, *unix.Stat_t, error) {
	full := filepath.Join(dir.Name(), name)
	// O_NONBLOCK: a FIFO put there must not hang the open.
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, nil, fmt.Errorf("%s is a symbolic link (the store follows no links): remove it: %w", full, errNotRegular)
		}
		return nil, nil, &os.PathError{Op: "open", Path: full, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, &os.PathError{Op: "stat", Path: full, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("%s: %w: remove it", full, errNotRegular)
	}
	return os.NewFile(uintptr(fd), full), &st, nil
}

// createTemp creates an empty temp file (0640) in dir, named with
// tmpPrefix so that it is never listed and is removed at the next start if
// it is left behind.
func createTemp(dir *os.File, path string) (*os.File, string, error) {
	var b [8]byte
	rand.Read(b[:])
	name := tmpPrefix + hex.EncodeToString(b[:])
	full := filepath.Join(path, name)
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return nil, "", fmt.Errorf("create %s: %w: check the store's permissions", full, err)
	}
	if err := unix.Fchmod(fd, fileMode); err != nil {
		unix.Close(fd)
		unix.Unlinkat(int(dir.Fd()), name, 0)
		return nil, "", fmt.Errorf("chmod %s: %w", full, err)
	}
	return os.NewFile(uintptr(fd), full), name, nil
}

// publish moves the temp file tmp in dir to name without ever replacing an
// existing name (fs.ErrExist then), and makes the rename durable. The
// caller has fsynced the file.
func publish(dir *os.File, tmp, name string) error {
	full := filepath.Join(dir.Name(), name)
	d := int(dir.Fd())
	err := unix.Renameat2(d, tmp, d, name, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE here: a hard link also fails on an
		// existing name.
		if err = unix.Linkat(d, tmp, d, name, 0); err == nil {
			err = unix.Unlinkat(d, tmp, 0)
		}
	}
	if err != nil {
		return &os.PathError{Op: "rename", Path: full, Err: err}
	}
	return syncDir(dir)
}

// removeAt removes the file name in dir; a missing file is not an error.
func removeAt(dir *os.File, name string) error {
	if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return &os.PathError{Op: "remove", Path: filepath.Join(dir.Name(), name), Err: err}
	}
	return syncDir(dir)
}

func syncDir(dir *os.File) error {
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir.Name(), err)
	}
	return nil
}
