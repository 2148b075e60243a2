package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sanboot/sanboot/agent/store"
)

const (
	// blockSize is the unit of zero detection: a block of zeros is not
	// written, so it stays a hole.
	blockSize = 4096
	// chunk is how much is copied between two looks at the context.
	chunk = 1 << 20
	// rangeChunk is how much copy_file_range moves per call.
	rangeChunk = 64 << 20
)

var zeroBlock = make([]byte, blockSize) // read only

// cloneFile makes dst, an empty file, hold the first size bytes of src and
// have size bytes. It shares blocks (FICLONE) when the store can reflink
// and copies sparsely otherwise, or when this pair of files refuses to
// share (the store then logs it). It returns the mode it used.
func (s *Store) cloneFile(ctx context.Context, dst, src *os.File, srcSize, size int64) (store.CloneMode, error) {
	if s.mode == store.CloneReflink && srcSize <= size {
		err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
		if err == nil {
			if srcSize < size {
				if err := dst.Truncate(size); err != nil {
					return "", fmt.Errorf("grow %s to %d bytes: %w", dst.Name(), size, err)
				}
			}
			return store.CloneReflink, nil
		}
		if !noReflink(err) {
			return "", fmt.Errorf("reflink %s to %s: %w", src.Name(), dst.Name(), err)
		}
		s.log.Warn("the file system refused to reflink; copying instead", "src", src.Name(), "err", err)
		if err := dst.Truncate(0); err != nil {
			return "", fmt.Errorf("truncate %s: %w", dst.Name(), err)
		}
	}
	return store.CloneCopy, sparseCopy(ctx, dst, src, min(srcSize, size), size)
}

// sparseCopy copies the data extents of src's first n bytes into dst and
// makes dst size bytes long; holes stay holes. Where SEEK_DATA is not
// supported it copies everything but blocks of zeros.
func sparseCopy(ctx context.Context, dst, src *os.File, n, size int64) error {
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("size %s to %d bytes: %w", dst.Name(), size, err)
	}
	sfd := int(src.Fd())
	for off := int64(0); off < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO): // no data after off
			return nil
		case errors.Is(err, unix.EINVAL) && off == 0: // no SEEK_DATA here
			return zeroSkipCopy(ctx, dst, src, 0, n)
		case err != nil:
			return fmt.Errorf("find data in %s (SEEK_DATA): %w", src.Name(), err)
		}
		if data >= n {
			return nil
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("find a hole in %s (SEEK_HOLE): %w", src.Name(), err)
		}
		hole = min(hole, n)
		if err := copyRange(ctx, dst, src, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off from src to dst (same offset) with
// copy_file_range, in the kernel, or through a buffer where that is not
// possible.
func copyRange(ctx context.Context, dst, src *os.File, off, n int64) error {
	end := off + n
	for off < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		roff, woff := off, off
		m, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(end-off, rangeChunk)), 0)
		switch {
		case err == nil && m == 0:
			return fmt.Errorf("copy %s: %w (the file shrank while it was copied)", src.Name(), io.ErrUnexpectedEOF)
		case err == nil:
			off += int64(m)
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL):
			return zeroSkipCopy(ctx, dst, src, off, end-off)
		default:
			return fmt.Errorf("copy %s to %s (copy_file_range): %w", src.Name(), dst.Name(), err)
		}
	}
	return nil
}

// zeroSkipCopy copies n bytes at off from src to dst through a buffer,
// leaving blocks of zeros unwritten (dst is already sized, so they read
// back as zeros and take no space).
func zeroSkipCopy(ctx context.Context, dst, src *os.File, off, n int64) error {
	buf := make([]byte, chunk)
	for end := off + n; off < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(end-off, chunk)]
		if _, err := src.ReadAt(b, off); err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w (the file shrank while it was copied)", io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("read %s: %w", src.Name(), err)
		}
		if err := writeNonZero(dst, b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// writeNonZero writes b at off in dst except its blocks of zeros, in as
// few writes as there are runs of non-zero blocks.
func writeNonZero(dst *os.File, b []byte, off int64) error {
	start := -1 // start of the current run of data blocks
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		_, err := dst.WriteAt(b[start:end], off+int64(start))
		start = -1
		if err != nil {
			return fmt.Errorf("write %s: %w", dst.Name(), err)
		}
		return nil
	}
	for i := 0; i < len(b); i += blockSize {
		j := min(i+blockSize, len(b))
		if bytes.Equal(b[i:j], zeroBlock[:j-i]) {
			if err := flush(i); err != nil {
				return err
			}
		} else if start < 0 {
			start = i
		}
	}
	return flush(len(b))
}

// writeStream writes exactly size bytes from r into dst (already sized),
// sparsely, feeding every byte to h. A stream with fewer or more bytes is
// an ErrChecksum error.
func writeStream(ctx context.Context, dst *os.File, r io.Reader, size int64, h io.Writer) error {
	buf := make([]byte, chunk)
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, buf[:min(size-off, chunk)])
		if n > 0 {
			h.Write(buf[:n])
			if err := writeNonZero(dst, buf[:n], off); err != nil {
				return err
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("the source ended after %d bytes, the spec says %d: fix the spec's size or the source: %w",
				off, size, store.ErrChecksum)
		}
		if err != nil {
			return fmt.Errorf("read the source after %d bytes: %w", off, err)
		}
	}
	var one [1]byte
	switch n, err := io.ReadFull(r, one[:]); {
	case n > 0:
		return fmt.Errorf("the source has more than the spec's %d bytes: fix the spec's size or the source: %w",
			size, store.ErrChecksum)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("read the source after %d bytes: %w", off, err)
	}
	return nil
}
