// Package filestore is the real store.Store: images and node disks as
// files under one root directory.
//
//	<root>/images/<project>/<image>.raw   golden images (immutable)
//	<root>/disks/<project>/<node>.raw     one disk per node
//
// Directories are 0750, files 0640. Names are checked with api.ValidateName
// before they become paths, every path is walked one component at a time
// from an open root directory with O_NOFOLLOW (openat, mkdirat, unlinkat,
// renameat2), so no symbolic link below the root is ever followed, and the
// root is locked (flock) so that two agents never share it.
//
// Clones. At start the store tries FICLONE between two temp files in the
// root. When the file system can reflink (XFS made with reflink=1, btrfs)
// Clone shares the image's blocks: constant time and no space until the
// node writes. When it cannot (ext4, tmpfs) Clone makes a sparse copy (only
// the data extents found with SEEK_DATA/SEEK_HOLE are copied, holes stay
// holes; a plain copy that skips zero blocks where SEEK_DATA is missing),
// CloneMode reports "copy", and one warning at start says to put the store
// on XFS with reflink=1 or on btrfs.
//
// Crash safety. Every new file (image or disk) is written to a temp file
// named ".sanboot-tmp-*" in its final directory, fsynced, renamed into place
// with RENAME_NOREPLACE (so an existing file is never overwritten), and the
// directory is fsynced. A crash leaves either the whole file under its
// final name or a temp file, and temp files are removed at start.
//
// Metadata. What the interface reports beyond the size (an image's source
// and sha256, a disk's image and clone mode) lives in the extended
// attribute user.sanboot.v1 of the file itself, set on the temp file before
// the rename, so the bytes and their description appear together. A file
// put there by hand, without that attribute, is listed with an empty
// source (and EnsureImage then reports ErrMismatch for it).
//
// Space. Capacity and free space come from statfs. An import that may write
// the whole image (upload, url) and a copy-mode copy are refused with
// store.ErrNoSpace before anything is written when they cannot fit. A
// reflink clone needs no space up front; Clone still refuses a disk larger
// than the free space, as the store.Store contract asks, so that every
// node can write its whole disk once. Space promised to operations in
// flight is subtracted from the free space the checks see.
//
// Sources. blank: a sparse file (ftruncate). upload, url: bytes from
// Options.Open, written sparsely (zero blocks become holes) while their
// sha256 is computed; the stream must have exactly the spec's size and,
// when the spec names one, its sha256 (else store.ErrChecksum). copy: a
// clone of another image of the project. snapshot: the node's disk, fsynced,
// then cloned. A copy or snapshot may be larger than its source (the image
// grows, sparsely), never smaller.
package filestore
