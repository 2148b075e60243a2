package lio

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// fsys is how the driver touches configfs. Every path is absolute. The
// kernel implements the real one (osFS); unit tests use a fake that
// emulates the part of the kernel's behaviour the driver relies on.
type fsys interface {
	Mkdir(name string) error
	// Remove is rmdir for a directory, unlink for a symlink.
	Remove(name string) error
	Symlink(target, link string) error
	Readlink(name string) (string, error)
	// ReadFile returns an attribute's value as the kernel prints it.
	ReadFile(name string) (string, error)
	// WriteFile stores value in an attribute with one write(2) call, as
	// configfs wants: a second write would start a new store.
	WriteFile(name, value string) error
	ReadDir(name string) ([]fs.DirEntry, error)
	Lstat(name string) (fs.FileInfo, error)
}

// osFS is configfs itself.
type osFS struct{}

func (osFS) Mkdir(name string) error              { return os.Mkdir(name, 0o755) }
func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) Symlink(target, link string) error    { return os.Symlink(target, link) }
func (osFS) Readlink(name string) (string, error) { return os.Readlink(name) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error) {
	return os.ReadDir(name)
}
func (osFS) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(name) }

func (osFS) ReadFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}

func (osFS) WriteFile(name, value string) error {
	// No O_TRUNC, no O_CREATE: configfs attributes exist or the write is
	// wrong, and each write(2) is one store.
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(value))
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// Ops counts the configfs operations a Driver made, by kind.
type Ops struct {
	Reads int64 // attribute reads, readdir, readlink, lstat
	// Entries is how many directory entries the readdirs returned: a
	// readdir of core/ or iscsi/ costs more as targets accumulate.
	Entries  int64
	Writes   int64 // attribute writes
	Mkdirs   int64
	Removes  int64 // rmdir and unlink
	Symlinks int64
}

// Changes is the number of operations that changed configfs.
func (o Ops) Changes() int64 { return o.Writes + o.Mkdirs + o.Removes + o.Symlinks }

// Total is the number of every operation.
func (o Ops) Total() int64 { return o.Reads + o.Changes() }

// Sub returns o - p.
func (o Ops) Sub(p Ops) Ops {
	return Ops{Reads: o.Reads - p.Reads, Entries: o.Entries - p.Entries, Writes: o.Writes - p.Writes, Mkdirs: o.Mkdirs - p.Mkdirs,
		Removes: o.Removes - p.Removes, Symlinks: o.Symlinks - p.Symlinks}
}

func (o Ops) String() string {
	return fmt.Sprintf("%d operations: %d reads (%d directory entries), %d writes, %d mkdir, %d rmdir/unlink, %d symlink",
		o.Total(), o.Reads, o.Entries, o.Writes, o.Mkdirs, o.Removes, o.Symlinks)
}

// countingFS counts what passes through it.
type countingFS struct {
	fs                                               fsys
	reads, entries, writes, mkdirs, removes, symlink atomic.Int64
}

func (c *countingFS) ops() Ops {
	return Ops{Reads: c.reads.Load(), Entries: c.entries.Load(), Writes: c.writes.Load(), Mkdirs: c.mkdirs.Load(),
		Removes: c.removes.Load(), Symlinks: c.symlink.Load()}
}

func (c *countingFS) Mkdir(name string) error { c.mkdirs.Add(1); return c.fs.Mkdir(name) }
func (c *countingFS) Remove(name string) error {
	c.removes.Add(1)
	return c.fs.Remove(name)
}
func (c *countingFS) Symlink(target, link string) error {
	c.symlink.Add(1)
	return c.fs.Symlink(target, link)
}
func (c *countingFS) Readlink(name string) (string, error) {
	c.reads.Add(1)
	return c.fs.Readlink(name)
}
func (c *countingFS) ReadFile(name string) (string, error) {
	c.reads.Add(1)
	return c.fs.ReadFile(name)
}
func (c *countingFS) WriteFile(name, value string) error {
	c.writes.Add(1)
	return c.fs.WriteFile(name, value)
}
func (c *countingFS) ReadDir(name string) ([]fs.DirEntry, error) {
	c.reads.Add(1)
	es, err := c.fs.ReadDir(name)
	c.entries.Add(int64(len(es)))
	return es, err
}
func (c *countingFS) Lstat(name string) (fs.FileInfo, error) {
	c.reads.Add(1)
	return c.fs.Lstat(name)
}

// attr trims the newline the kernel prints after an attribute's value.
func attr(s string) string { return strings.TrimRight(s, "\n") }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
func isExist(err error) bool    { return errors.Is(err, fs.ErrExist) }
func isBusy(err error) bool     { return errors.Is(err, syscall.EBUSY) }

// mkdir makes a configfs directory; one that exists is fine.
func (d *Driver) mkdir(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.fs.Mkdir(p); err != nil && !isExist(err) {
		return fmt.Errorf("mkdir %s: %w", p, err)
	}
	return nil
}

// remove removes a configfs directory or symlink; one that is gone is
// fine. EBUSY is retried (see retryBusy).
func (d *Driver) remove(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := d.retryBusy(ctx, "remove "+p, func() error { return d.fs.Remove(p) })
	if err != nil && !isNotExist(err) {
		return err
	}
	return nil
}

func (d *Driver) symlink(ctx context.Context, target, link string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.fs.Symlink(target, link); err != nil {
		return fmt.Errorf("symlink %s -> %s: %w", link, target, err)
	}
	return nil
}

// write writes value to the attribute p.
func (d *Driver) write(ctx context.Context, p, value string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.retryBusy(ctx, "write "+p, func() error { return d.fs.WriteFile(p, value) }); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, p, err)
	}
	return nil
}

// setFrom writes value to the attribute p unless cur, what p held when
// it was read, is value already: only what differs is written, and some
// attributes refuse a second write of the same value (enable).
func (d *Driver) setFrom(ctx context.Context, p, cur, value string) error {
	if cur == value {
		return nil
	}
	return d.write(ctx, p, value)
}

// retryBusy runs f until it does not fail with EBUSY, for at most
// busyTimeout. EBUSY is never ignored: it is logged when first seen, and
// when it lasts the call fails with ErrBusy.
func (d *Driver) retryBusy(ctx context.Context, what string, f func() error) error {
	deadline := time.Now().Add(d.busyTimeout)
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !isBusy(err) {
			return err
		}
		if attempt == 1 {
			d.log.Warn("configfs says busy (a live session, a command in flight, or a link to the object); retrying",
				"op", what, "err", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s: still busy after %d attempts in %v: %v; an initiator may still be logged in "+
				"or another object links to it: log the node out (or remove the link); the agent retries", ErrBusy, what, attempt, d.busyTimeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (configfs said busy: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
