// Package store defines where the agent keeps disk bytes: golden images and
// the per-node disks cloned from them. Package filestore is the real store:
// images at <root>/images/<project>/<image>.raw and disks at
// <root>/disks/<project>/<node>.raw, cloned with reflink when the file
// system can; package fake is an in-memory stand-in for unit tests and
// control-plane benchmarks.
//
// Every Store must pass the conformance suite in package storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sanboot/sanboot/api"
)

// Errors a Store returns, wrapped; test with errors.Is.
var (
	// ErrNotFound: the image or disk does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNoSpace: the store has too little free space for the operation.
	ErrNoSpace = errors.New("not enough free space in the store")
	// ErrMismatch: an image of that name exists with another size or
	// source. Images are immutable: create one under a new name.
	ErrMismatch = errors.New("an image of that name already exists with another size or source")
	// ErrChecksum: the bytes of an upload or url source do not have the
	// sha256 (or the size) the spec names. Nothing was stored; fix the
	// spec or the source.
	ErrChecksum = errors.New("the source's bytes do not match the spec's sha256 or size")
)

// CloneMode says how a disk was made from its image.
type CloneMode string

// Clone modes, as reported in NodeStatus.clone_mode and AgentRecord.clone_mode.
const (
	// CloneReflink: the disk shares the image's blocks (FICLONE on XFS or
	// btrfs): constant time, no space until written.
	CloneReflink CloneMode = "reflink"
	// CloneCopy: a sparse copy (SEEK_DATA/SEEK_HOLE), for file systems
	// without reflink: time and space grow with the image's data.
	CloneCopy CloneMode = "copy"
	// CloneFake: nothing was copied; the fake store only pretends.
	CloneFake CloneMode = "fake"
	// CloneRBD: the disk is an RBD clone of a protected snapshot of the
	// image (Ceph layering): constant time, no space until written.
	CloneRBD CloneMode = "rbd"
)

// RBDPathPrefix starts the Path of an image or disk kept in Ceph RBD:
// rbd:POOL/IMAGE. Targets serve such a path through the rbd backing store
// of tgt; every other Path is an absolute file or device path.
const RBDPathPrefix = "rbd:"

// RBDPath is the Path of RBD image image in pool.
func RBDPath(pool, image string) string { return RBDPathPrefix + pool + "/" + image }

// ParseRBDPath splits an RBD Path into its pool and image; ok is false for
// any other path (and for an RBD path without both parts).
func ParseRBDPath(p string) (pool, image string, ok bool) {
	rest, ok := strings.CutPrefix(p, RBDPathPrefix)
	if !ok {
		return "", "", false
	}
	pool, image, ok = strings.Cut(rest, "/")
	if !ok || pool == "" || image == "" || strings.Contains(image, "/") {
		return "", "", false
	}
	return pool, image, true
}

// Store keeps images and node disks. All methods are safe for concurrent
// use, validate names before they become paths, and are idempotent where
// that makes sense (EnsureImage, Clone, Delete*).
type Store interface {
	// CloneMode is how Clone makes disks in this store.
	CloneMode() CloneMode
	// Capacity reports the store's size and free space.
	Capacity(ctx context.Context) (Capacity, error)

	// EnsureImage makes the store hold the image described by spec,
	// importing it from spec.Source if it is missing. An existing image
	// with the same size and source is returned as it is; one with
	// another size or source is ErrMismatch.
	EnsureImage(ctx context.Context, spec ImageSpec) (Image, error)
	// StatImage returns one image, or ErrNotFound.
	StatImage(ctx context.Context, project, name string) (Image, error)
	// DeleteImage removes an image; a missing image is not an error.
	// Disks cloned from it are not affected.
	DeleteImage(ctx context.Context, project, name string) error
	// ListImages returns every image, sorted by project and name.
	ListImages(ctx context.Context) ([]Image, error)

	// Clone makes the disk of node in project from image (same project)
	// and returns it. If the disk exists it is returned unchanged: Clone
	// never overwrites a node's data. ErrNotFound when the image is
	// missing; ErrNoSpace when the store's free bytes are fewer than the
	// disk's size (every node must be able to write its whole disk once;
	// thin clones may still overcommit the store across nodes).
	// owner is the node record's uid, kept with the disk (Disk.Owner) so
	// that a later node of the same name never takes this one's data.
	Clone(ctx context.Context, project, image, node, owner string) (Disk, error)
	// StatDisk returns one node's disk, or ErrNotFound.
	StatDisk(ctx context.Context, project, node string) (Disk, error)
	// DeleteDisk removes a node's disk; a missing disk is not an error.
	DeleteDisk(ctx context.Context, project, node string) error
	// ListDisks returns every node disk, sorted by project and node.
	ListDisks(ctx context.Context) ([]Disk, error)
}

// Capacity is the size of a store and what is left of it.
type Capacity struct {
	CapacityBytes int64
	FreeBytes     int64
}

// SourceKind says where an image's bytes come from.
type SourceKind string

// Source kinds, the same as api/v1 ImageSource.
const (
	SourceBlank    SourceKind = "blank"
	SourceUpload   SourceKind = "upload"
	SourceURL      SourceKind = "url"
	SourceSnapshot SourceKind = "snapshot"
	SourceCopy     SourceKind = "copy"
)

// Source is where an image's bytes come from. Only the fields of its Kind
// are set.
type Source struct {
	Kind     SourceKind
	UploadID string // upload
	Member   string // upload: the control-plane member that stages it
	URL      string // url
	SHA256   string // upload, url (optional for url)
	Node     string // snapshot: the node whose disk becomes the image
	Image    string // copy: another image of the same project
	// UID is the image record's metadata.uid. An image deleted and created
	// again under the same name has another UID: it is another image, and
	// a stored copy of the old one must not stand in for it. Empty means
	// unknown (files stored before UIDs were recorded).
	UID string
}

// ImageSpec asks for an image.
type ImageSpec struct {
	Project   string
	Name      string
	SizeBytes int64
	Source    Source
}

// Image is an image the store holds.
type Image struct {
	Project   string
	Name      string
	Path      string // where the bytes are: an absolute path or RBDPath (the fake reports where they would be)
	SizeBytes int64
	Source    Source
	// SHA256 of the bytes, when the store computed it ("" otherwise).
	SHA256 string
	// CloneDepth is how many images the image reads through (its chain
	// of parents), and Flattening whether the store is copying their
	// data into it in the background to shorten that chain. Reported by
	// EnsureImage of a store whose images are clones (rbd); zero
	// elsewhere.
	CloneDepth int
	Flattening bool
}

// Disk is a node's disk.
type Disk struct {
	Project string
	Node    string
	Image   string // the image it was cloned from
	// Owner is the uid of the node record the disk was made for ("" when
	// unknown: made before owners were recorded).
	Owner     string
	Path      string // an absolute path or RBDPath
	SizeBytes int64
	CloneMode CloneMode
}

// ValidateImageSpec checks spec before it becomes a path or a download.
func ValidateImageSpec(spec ImageSpec) error {
	errs := []error{
		api.ValidateName("image.project", spec.Project),
		api.ValidateName("image.name", spec.Name),
	}
	if spec.SizeBytes <= 0 || spec.SizeBytes%512 != 0 || spec.SizeBytes > api.MaxImageSize {
		errs = append(errs, &api.FieldError{Field: "image.sizeBytes", Value: strconv.FormatInt(spec.SizeBytes, 10),
			Msg: "must be a positive multiple of 512 bytes, at most 64 TiB"})
	}
	s := spec.Source
	switch s.Kind {
	case SourceBlank:
	case SourceUpload:
		if s.UploadID == "" {
			errs = append(errs, &api.FieldError{Field: "image.source.uploadId", Msg: "is required for an upload source"})
		}
	case SourceURL:
		if s.URL == "" {
			errs = append(errs, &api.FieldError{Field: "image.source.url", Msg: "is required for a url source"})
		}
	case SourceSnapshot:
		errs = append(errs, api.ValidateName("image.source.node", s.Node))
	case SourceCopy:
		errs = append(errs, api.ValidateName("image.source.image", s.Image))
	default:
		errs = append(errs, &api.FieldError{Field: "image.source.kind", Value: string(s.Kind),
			Msg: "must be one of blank, upload, url, snapshot, copy"})
	}
	return errors.Join(errs...)
}

// CheckClone is the check every Clone starts with: ctx is not done, and
// the names of the image and of the node's disk are valid (the error says
// which is not).
func CheckClone(ctx context.Context, project, image, node string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidateNames(project, image); err != nil {
		return fmt.Errorf("clone image %s/%s: %w", project, image, err)
	}
	if err := ValidateNames(project, node); err != nil {
		return fmt.Errorf("clone disk of node %s/%s: %w", project, node, err)
	}
	return nil
}

// ValidateNames checks a project and a name (of an image or a node).
func ValidateNames(project, name string) error {
	return errors.Join(api.ValidateName("project", project), api.ValidateName("name", name))
}

// NoSpace returns an ErrNoSpace error that says how much is missing.
func NoSpace(what string, need, free int64) error {
	return fmt.Errorf("%s needs %d bytes, the store has %d free: free space on this agent or place the node elsewhere: %w",
		what, need, free, ErrNoSpace)
}

// SameSource reports whether a stored image's source is the one spec asks
// for. A stored image with no recorded UID matches on everything else.
func SameSource(stored, want Source) bool {
	if stored.UID == "" {
		stored.UID = want.UID
	}
	return stored == want
}
