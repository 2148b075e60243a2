// Package fake is an in-memory store.Store: a FAKE that keeps no bytes. It
// exists for unit tests and for control-plane benchmarks (sanboot-agent
// --driver=fake) and passes the same conformance suite (storetest) as the
// real store.
//
// Space accounting models a thin (reflink) store as df would report it:
//   - a blank image is sparse and uses 0 bytes;
//   - an image from any other source (upload, url, snapshot, copy) is
//     written in full when imported and uses its size;
//   - a clone shares its image's blocks and uses 0 bytes (nothing is ever
//     written to a fake disk).
//
// Free is capacity minus that use. Like the real store, the fake refuses
// (ErrNoSpace) an import larger than free space and a clone whose size is
// larger than free space.
package fake

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"

	"github.com/sanboot/sanboot/agent/store"
)

// Options configure a fake store.
type Options struct {
	// Root is where the real store would keep its files; the fake only
	// reports paths under it. It must be absolute.
	Root string
	// CapacityBytes is the pretend size of the store.
	CapacityBytes int64
	// CloneMode is what Clone reports (default store.CloneFake); tests set
	// store.CloneCopy to look like a slow store.
	CloneMode store.CloneMode
	// BeforeClone, when set, runs before every clone that makes a new disk,
	// outside any lock; an error fails the clone. Tests use it to hold a
	// clone while they look at the status.
	BeforeClone func(ctx context.Context, project, node string) error
	// BeforeStatDisk, when set, runs before every StatDisk, outside any
	// lock (tests use it to make a store call slow).
	BeforeStatDisk func(ctx context.Context, project, node string)
	// BeforeEnsureImage, likewise, runs before every EnsureImage.
	BeforeEnsureImage func(ctx context.Context, project, name string)
}

type ref struct{ project, name string }

// Store is the fake store.
type Store struct {
	opts   Options
	mu     sync.Mutex
	images map[ref]store.Image
	disks  map[ref]store.Disk
	used   int64
	clones int
}

// New returns an empty fake store.
func New(opts Options) (*Store, error) {
	if !filepath.IsAbs(opts.Root) || filepath.Clean(opts.Root) != opts.Root {
		return nil, fmt.Errorf("fake store root %q: use an absolute, clean path such as /var/lib/sanboot", opts.Root)
	}
	if opts.CapacityBytes <= 0 {
		return nil, fmt.Errorf("fake store capacity %d: give a positive size such as 1TiB", opts.CapacityBytes)
	}
	if opts.CloneMode == "" {
		opts.CloneMode = store.CloneFake
	}
	return &Store{opts: opts, images: map[ref]store.Image{}, disks: map[ref]store.Disk{}}, nil
}

// CloneMode implements store.Store.
func (s *Store) CloneMode() store.CloneMode { return s.opts.CloneMode }

// Capacity implements store.Store.
func (s *Store) Capacity(ctx context.Context) (store.Capacity, error) {
	if err := ctx.Err(); err != nil {
		return store.Capacity{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return store.Capacity{CapacityBytes: s.opts.CapacityBytes, FreeBytes: s.opts.CapacityBytes - s.used}, nil
}

func allocated(im store.Image) int64 {
	if im.Source.Kind == store.SourceBlank {
		return 0
	}
	return im.SizeBytes
}

// EnsureImage implements store.Store. Every source kind is accepted and
// recorded; nothing is downloaded.
func (s *Store) EnsureImage(ctx context.Context, spec store.ImageSpec) (store.Image, error) {
	if err := ctx.Err(); err != nil {
		return store.Image{}, err
	}
	if err := store.ValidateImageSpec(spec); err != nil {
		return store.Image{}, fmt.Errorf("image %s/%s: %w", spec.Project, spec.Name, err)
	}
	if hook := s.opts.BeforeEnsureImage; hook != nil {
		hook(ctx, spec.Project, spec.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := ref{spec.Project, spec.Name}
	if im, ok := s.images[k]; ok {
		if im.SizeBytes != spec.SizeBytes || !store.SameSource(im.Source, spec.Source) {
			return store.Image{}, fmt.Errorf("image %s/%s holds %d bytes from %s, the spec asks for %d bytes from %s: %w",
				spec.Project, spec.Name, im.SizeBytes, im.Source.Kind, spec.SizeBytes, spec.Source.Kind, store.ErrMismatch)
		}
		return im, nil
	}
	im := store.Image{
		Project:   spec.Project,
		Name:      spec.Name,
		Path:      filepath.Join(s.opts.Root, "images", spec.Project, spec.Name+".raw"),
		SizeBytes: spec.SizeBytes,
		Source:    spec.Source,
	}
	if need, free := allocated(im), s.opts.CapacityBytes-s.used; need > free {
		return store.Image{}, store.NoSpace(fmt.Sprintf("image %s/%s", spec.Project, spec.Name), need, free)
	}
	s.used += allocated(im)
	s.images[k] = im
	return im, nil
}

// StatImage implements store.Store.
func (s *Store) StatImage(ctx context.Context, project, name string) (store.Image, error) {
	if err := store.ValidateNames(project, name); err != nil {
		return store.Image{}, fmt.Errorf("image %s/%s: %w", project, name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.images[ref{project, name}]
	if !ok {
		return store.Image{}, fmt.Errorf("image %s/%s: %w", project, name, store.ErrNotFound)
	}
	return im, nil
}

// DeleteImage implements store.Store.
func (s *Store) DeleteImage(ctx context.Context, project, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateNames(project, name); err != nil {
		return fmt.Errorf("delete image %s/%s: %w", project, name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := ref{project, name}
	if im, ok := s.images[k]; ok {
		s.used -= allocated(im)
		delete(s.images, k)
	}
	return nil
}

// ListImages implements store.Store.
func (s *Store) ListImages(ctx context.Context) ([]store.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sorted(s.images), nil
}

// Clone implements store.Store.
func (s *Store) Clone(ctx context.Context, project, image, node, owner string) (store.Disk, error) {
	if err := store.CheckClone(ctx, project, image, node); err != nil {
		return store.Disk{}, err
	}
	if d, err := s.StatDisk(ctx, project, node); err == nil {
		return d, nil
	}
	if hook := s.opts.BeforeClone; hook != nil {
		if err := hook(ctx, project, node); err != nil {
			return store.Disk{}, fmt.Errorf("clone %s/%s for node %s: %w", project, image, node, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := ref{project, node}
	if d, ok := s.disks[k]; ok { // made while the hook ran
		return d, nil
	}
	im, ok := s.images[ref{project, image}]
	if !ok {
		return store.Disk{}, fmt.Errorf("clone image %s/%s for node %s: %w", project, image, node, store.ErrNotFound)
	}
	if free := s.opts.CapacityBytes - s.used; im.SizeBytes > free {
		return store.Disk{}, store.NoSpace(fmt.Sprintf("disk of node %s/%s (clone of %s)", project, node, image), im.SizeBytes, free)
	}
	d := store.Disk{
		Project:   project,
		Node:      node,
		Image:     image,
		Owner:     owner,
		Path:      filepath.Join(s.opts.Root, "disks", project, node+".raw"),
		SizeBytes: im.SizeBytes,
		CloneMode: s.opts.CloneMode,
	}
	s.disks[k] = d
	s.clones++
	return d, nil
}

// StatDisk implements store.Store.
func (s *Store) StatDisk(ctx context.Context, project, node string) (store.Disk, error) {
	if err := store.ValidateNames(project, node); err != nil {
		return store.Disk{}, fmt.Errorf("disk %s/%s: %w", project, node, err)
	}
	if hook := s.opts.BeforeStatDisk; hook != nil {
		hook(ctx, project, node)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.disks[ref{project, node}]
	if !ok {
		return store.Disk{}, fmt.Errorf("disk of node %s/%s: %w", project, node, store.ErrNotFound)
	}
	return d, nil
}

// DeleteDisk implements store.Store.
func (s *Store) DeleteDisk(ctx context.Context, project, node string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateNames(project, node); err != nil {
		return fmt.Errorf("delete disk %s/%s: %w", project, node, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.disks, ref{project, node})
	return nil
}

// ListDisks implements store.Store.
func (s *Store) ListDisks(ctx context.Context) ([]store.Disk, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sorted(s.disks), nil
}

// Clones is how many disks Clone has made.
func (s *Store) Clones() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clones
}

func sorted[V any](m map[ref]V) []V {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b ref) int {
		return cmp.Or(cmp.Compare(a.project, b.project), cmp.Compare(a.name, b.name))
	})
	out := make([]V, 0, len(keys))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}
