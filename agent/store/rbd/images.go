package rbd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/sanboot/sanboot/agent/store"
)

// EnsureImage implements store.Store. A new image is made under a temp
// name (see the package comment), described, given its protected snapshot
// and renamed into place.
func (s *Store) EnsureImage(ctx context.Context, spec store.ImageSpec) (store.Image, error) {
	if err := ctx.Err(); err != nil {
		return store.Image{}, err
	}
	what := fmt.Sprintf("image %s/%s", spec.Project, spec.Name)
	if err := store.ValidateImageSpec(spec); err != nil {
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	final := imageName(spec.Project, spec.Name)
	unlock, err := s.locks.Lock(ctx, final)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	im, err := s.statImage(ctx, spec.Project, spec.Name)
	switch {
	case err == nil:
		return s.bounded(ctx, final, im, spec)
	case !errors.Is(err, store.ErrNotFound):
		return store.Image{}, err
	}
	tmp := s.newTmp()
	if err := s.makeImage(ctx, tmp, final, spec); err != nil {
		if rmErr := s.remove(ctx, tmp); rmErr != nil {
			s.log.Warn("could not remove a temp image; the agent removes it when it starts again", "image", tmp, "err", rmErr)
		}
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.publish(ctx, tmp, final); err != nil && !isExist(err) { // EEXIST: made by another agent meanwhile
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	im, err = s.statImage(ctx, spec.Project, spec.Name)
	if err != nil {
		return store.Image{}, err
	}
	return s.bounded(ctx, final, im, spec)
}

// bounded returns im if it is what spec asks for, with its clone depth,
// after it started flattening it when it is too deep (boundDepth).
func (s *Store) bounded(ctx context.Context, n string, im store.Image, spec store.ImageSpec) (store.Image, error) {
	im, err := same(im, spec)
	if err != nil {
		return im, err
	}
	return im, s.boundDepth(ctx, n, &im)
}

// makeImage fills the temp image tmp as spec asks, describes it and
// protects its snapshot.
func (s *Store) makeImage(ctx context.Context, tmp, final string, spec store.ImageSpec) error {
	m := meta{Kind: "image", Name: final, SizeBytes: spec.SizeBytes, Source: spec.Source}
	size := strconv.FormatInt(spec.SizeBytes, 10) + "B"
	switch spec.Source.Kind {
	case store.SourceBlank:
		if _, err := s.c.run(ctx, "create", "--size", size, tmp); err != nil {
			return err
		}
	case store.SourceUpload, store.SourceURL:
		sum, err := s.importStream(ctx, tmp, spec)
		if err != nil {
			return err
		}
		m.SHA256 = sum
	case store.SourceCopy:
		src, err := s.statImage(ctx, spec.Project, spec.Source.Image)
		if err != nil {
			return err
		}
		if err := s.cloneFrom(ctx, imageName(spec.Project, spec.Source.Image), baseSnap, src.SizeBytes, tmp, spec); err != nil {
			return err
		}
		if src.SizeBytes == spec.SizeBytes {
			m.SHA256 = src.SHA256 // the same bytes
		}
	case store.SourceSnapshot:
		disk := diskName(spec.Project, spec.Source.Node)
		dm, err := s.readMeta(ctx, disk)
		if err != nil || dm.Kind != "disk" {
			return notFound("the disk of node "+spec.Project+"/"+spec.Source.Node, errors.Join(err, errNotSanboot(dm, "disk")))
		}
		// One snapshot per image made from the disk; a retry after a
		// crash finds and reuses it (EEXIST).
		snap := "to." + spec.Name + "." + uidPart(spec.Source.UID)
		if _, err := s.c.run(ctx, "snap", "create", disk+"@"+snap); err != nil && !isExist(err) {
			return fmt.Errorf("snapshot the disk of node %s: %w", spec.Source.Node, err)
		}
		if err := s.cloneFrom(ctx, disk, snap, dm.SizeBytes, tmp, spec); err != nil {
			return err
		}
	}
	if err := s.boundHard(ctx, tmp, final, &m); err != nil {
		return err
	}
	if err := s.writeMeta(ctx, tmp, m); err != nil {
		return err
	}
	if _, err := s.c.run(ctx, "snap", "create", tmp+"@"+baseSnap); err != nil {
		return err
	}
	_, err := s.c.run(ctx, "snap", "protect", tmp+"@"+baseSnap)
	return err
}

// boundHard flattens the new image tmp before it is published when its
// chain of parents is longer than the hard limit (see flatten.go; the
// soft limit is kept by flattening in the background once published).
func (s *Store) boundHard(ctx context.Context, tmp, final string, m *meta) error {
	if !isClone(m.Source) {
		return nil
	}
	depth, err := s.depth(ctx, tmp)
	if err != nil {
		return err
	}
	if depth > s.hardDepth() {
		s.log.Info("flattening a new image before publishing it: its chain of parents is longer than the hard limit", "image", final, "depth", depth, "hardMax", s.hardDepth())
		long := s.c
		long.timeout = 0 // as long as the image's data takes; ctx bounds it
		if _, err := long.run(ctx, "flatten", "--no-progress", tmp); err != nil {
			return fmt.Errorf("flatten (clone depth %d > %d): %w", depth, s.hardDepth(), err)
		}
		m.Flattened = true
	}
	return nil
}

// errNotSanboot: an image of a sanboot name whose description is missing
// or of another kind is not one of the store's.
func errNotSanboot(m meta, kind string) error {
	if m.Kind == kind {
		return nil
	}
	return fmt.Errorf("the RBD image has no sanboot description of a %s (made by hand?): %w", kind, store.ErrNotFound)
}

func uidPart(uid string) string {
	if uid == "" {
		return "nouid"
	}
	return uid
}

// cloneFrom clones parent@snap (protecting the snapshot first: format 1
// clones need it) into tmp, grown to spec's size.
func (s *Store) cloneFrom(ctx context.Context, parent, snap string, parentSize int64, tmp string, spec store.ImageSpec) error {
	if spec.SizeBytes < parentSize {
		return fmt.Errorf("the spec's size %d is smaller than the %d bytes of its source: give at least %d bytes",
			spec.SizeBytes, parentSize, parentSize)
	}
	if err := s.protect(ctx, parent, snap); err != nil {
		return err
	}
	if _, err := s.c.run(ctx, "clone", parent+"@"+snap, s.c.pool+"/"+tmp); err != nil {
		return err
	}
	if spec.SizeBytes > parentSize {
		_, err := s.c.run(ctx, "resize", "--no-progress", "--size", strconv.FormatInt(spec.SizeBytes, 10)+"B", tmp)
		return err
	}
	return nil
}

// protect protects img@snap unless it already is.
func (s *Store) protect(ctx context.Context, img, snap string) error {
	_, err := s.c.run(ctx, "snap", "protect", img+"@"+snap)
	if err != nil && !errors.Is(err, errAlreadyProtected) {
		return err
	}
	return nil
}

// importStream writes the bytes of an upload or url source into a new
// image tmp (rbd import from stdin skips zero blocks), checking their size
// and sha256 on the way.
func (s *Store) importStream(ctx context.Context, tmp string, spec store.ImageSpec) (string, error) {
	rc, err := s.open(ctx, spec.Source)
	if err != nil {
		return "", fmt.Errorf("open the %s source: %w", spec.Source.Kind, err)
	}
	defer rc.Close()
	h := sha256.New()
	r := &exactReader{r: rc, left: spec.SizeBytes, h: h}
	if _, err := s.c.runStdin(ctx, r, "import", "--no-progress", "-", tmp); err != nil {
		if r.err != nil {
			return "", r.err
		}
		return "", err
	}
	if r.err != nil {
		return "", r.err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want := spec.Source.SHA256; want != "" && !strings.EqualFold(want, sum) {
		return "", fmt.Errorf("the source's sha256 is %s, the spec says %s: fix the spec or the source: %w", sum, want, store.ErrChecksum)
	}
	return sum, nil
}

// exactReader passes exactly left bytes through h and then EOF; a source
// that ends early or goes on is an ErrChecksum (kept in err, since rbd
// import only sees an early end).
type exactReader struct {
	r    io.Reader
	left int64
	h    hash.Hash
	err  error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left == 0 {
		var one [1]byte
		if n, _ := io.ReadFull(e.r, one[:]); n > 0 {
			e.err = fmt.Errorf("the source has more bytes than the spec's size: %w", store.ErrChecksum)
			return 0, e.err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.h.Write(p[:n])
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		e.err = fmt.Errorf("the source ended %d bytes before the spec's size: %w", e.left, store.ErrChecksum)
		return n, e.err
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// same returns im if it is what spec asks for, else ErrMismatch.
func same(im store.Image, spec store.ImageSpec) (store.Image, error) {
	if im.SizeBytes != spec.SizeBytes || !store.SameSource(im.Source, spec.Source) {
		return store.Image{}, fmt.Errorf("image %s/%s holds %d bytes from source %q, the spec asks for %d bytes from %q: %w",
			spec.Project, spec.Name, im.SizeBytes, im.Source.Kind, spec.SizeBytes, spec.Source.Kind, store.ErrMismatch)
	}
	return im, nil
}

// StatImage implements store.Store.
func (s *Store) StatImage(ctx context.Context, project, name string) (store.Image, error) {
	if err := ctx.Err(); err != nil {
		return store.Image{}, err
	}
	if err := store.ValidateNames(project, name); err != nil {
		return store.Image{}, fmt.Errorf("image %s/%s: %w", project, name, err)
	}
	return s.statImage(ctx, project, name)
}

func (s *Store) statImage(ctx context.Context, project, name string) (store.Image, error) {
	n := imageName(project, name)
	m, err := s.readMeta(ctx, n)
	if err == nil {
		err = errNotSanboot(m, "image")
	}
	if err != nil {
		return store.Image{}, notFound(fmt.Sprintf("image %s/%s", project, name), err)
	}
	return store.Image{Project: project, Name: name, Path: store.RBDPath(s.c.pool, n), SizeBytes: m.SizeBytes,
		Source: m.Source, SHA256: m.SHA256}, nil
}

// DeleteImage implements store.Store: the image goes, or, while clones of
// it live, is renamed old.* and goes with the last of them.
func (s *Store) DeleteImage(ctx context.Context, project, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateNames(project, name); err != nil {
		return fmt.Errorf("delete image %s/%s: %w", project, name, err)
	}
	n := imageName(project, name)
	unlock, err := s.locks.Lock(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	s.images.forget(n)
	// A flatten cut short leaves a valid image; the kill may leave its
	// watch for ~30 s, so that the rm below says EBUSY and the caller
	// tries again.
	s.flats.stop(n)
	if err := s.remove(ctx, n); err != nil {
		return fmt.Errorf("delete image %s/%s: %w", project, name, err)
	}
	s.collect(ctx)
	return nil
}

// ListImages implements store.Store.
func (s *Store) ListImages(ctx context.Context) ([]store.Image, error) {
	var out []store.Image
	_, err := s.walk(ctx, imagePrefix, func(project, name string) error {
		im, err := s.statImage(ctx, project, name)
		if err == nil {
			out = append(out, im)
		}
		return err
	})
	return out, err
}

// walk calls fn for every image of the pool named prefix+project.name with
// valid names, sorted by project then name. One removed meanwhile
// (ErrNotFound) is skipped. It reports whether the pool holds deleted
// images (old.*).
func (s *Store) walk(ctx context.Context, prefix string, fn func(project, name string) error) (retired bool, err error) {
	names, err := s.names(ctx)
	if err != nil {
		return false, fmt.Errorf("list pool %s: %w", s.c.pool, err)
	}
	var keys [][2]string
	for _, n := range names {
		retired = retired || strings.HasPrefix(n, retiredPrefix)
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		p, name, ok := strings.Cut(rest, ".")
		if ok && store.ValidateNames(p, name) == nil {
			keys = append(keys, [2]string{p, name})
		}
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1])
	})
	for _, k := range keys {
		if err := fn(k[0], k[1]); err != nil && !errors.Is(err, store.ErrNotFound) {
			return retired, err
		}
	}
	return retired, nil
}
