package filestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sanboot/sanboot/agent/store"
)

func (s *Store) imagePath(project, name string) string {
	return filepath.Join(s.root, imagesDir, project, name+rawExt)
}

// EnsureImage implements store.Store for every source kind (see the
// package comment).
func (s *Store) EnsureImage(ctx context.Context, spec store.ImageSpec) (store.Image, error) {
	if err := ctx.Err(); err != nil {
		return store.Image{}, err
	}
	what := fmt.Sprintf("image %s/%s", spec.Project, spec.Name)
	if err := store.ValidateImageSpec(spec); err != nil {
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	unlock, err := s.locks.Lock(ctx, imagesDir+"/"+spec.Project+"/"+spec.Name)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	dir, err := s.openDir(imagesDir, spec.Project, true)
	if err != nil {
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	defer dir.Close()

	im, err := s.statImage(dir, spec.Project, spec.Name)
	switch {
	case err == nil:
		return same(im, spec)
	case !errors.Is(err, fs.ErrNotExist):
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	switch spec.Source.Kind {
	case store.SourceBlank:
		err = create(dir, spec.Name+rawExt, func(f *os.File) (meta, error) {
			if err := f.Truncate(spec.SizeBytes); err != nil {
				return meta{}, fmt.Errorf("size %s: %w", f.Name(), err)
			}
			return meta{Kind: "image", Source: toSourceMeta(spec.Source)}, nil
		})
	case store.SourceUpload, store.SourceURL:
		err = s.importStream(ctx, dir, spec)
	case store.SourceSnapshot:
		err = s.importClone(ctx, dir, spec, disksDir, spec.Source.Node)
	case store.SourceCopy:
		err = s.importClone(ctx, dir, spec, imagesDir, spec.Source.Image)
	}
	if err != nil && !errors.Is(err, fs.ErrExist) { // ErrExist: made by someone else meanwhile
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	im, err = s.statImage(dir, spec.Project, spec.Name)
	if err != nil {
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	return same(im, spec)
}

// same returns im if it is what spec asks for, else ErrMismatch.
func same(im store.Image, spec store.ImageSpec) (store.Image, error) {
	if im.SizeBytes != spec.SizeBytes || !store.SameSource(im.Source, spec.Source) {
		return store.Image{}, fmt.Errorf("image %s/%s holds %d bytes from source %q, the spec asks for %d bytes from %q: %w",
			spec.Project, spec.Name, im.SizeBytes, im.Source.Kind, spec.SizeBytes, spec.Source.Kind, store.ErrMismatch)
	}
	return im, nil
}

// importStream writes the bytes of an upload or url source, checking
// their size and sha256.
func (s *Store) importStream(ctx context.Context, dir *os.File, spec store.ImageSpec) error {
	release, err := s.reserve(fmt.Sprintf("import of image %s/%s", spec.Project, spec.Name), spec.SizeBytes)
	if err != nil {
		return err
	}
	defer release()
	rc, err := s.open(ctx, spec.Source)
	if err != nil {
		return fmt.Errorf("open the %s source: %w", spec.Source.Kind, err)
	}
	defer rc.Close()
	return create(dir, spec.Name+rawExt, func(f *os.File) (meta, error) {
		if err := f.Truncate(spec.SizeBytes); err != nil {
			return meta{}, fmt.Errorf("size %s: %w", f.Name(), err)
		}
		h := sha256.New()
		if err := writeStream(ctx, f, rc, spec.SizeBytes, h); err != nil {
			return meta{}, err
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if want := spec.Source.SHA256; want != "" && !strings.EqualFold(want, sum) {
			return meta{}, fmt.Errorf("the source's sha256 is %s, the spec says %s: fix the spec or the source: %w",
				sum, want, store.ErrChecksum)
		}
		return meta{Kind: "image", Source: toSourceMeta(spec.Source), SHA256: sum}, nil
	})
}

// importClone makes an image from another file of the project: a node's
// disk (snapshot) or another image (copy), reflinked when the store can.
func (s *Store) importClone(ctx context.Context, dir *os.File, spec store.ImageSpec, kind, name string) error {
	what := map[string]string{disksDir: "the disk of node", imagesDir: "image"}[kind] + " " + spec.Project + "/" + name
	sd, err := s.openDir(kind, spec.Project, false)
	if err != nil {
		return notFound(what, err)
	}
	defer sd.Close()
	src, st, err := openRegular(sd, name+rawExt)
	if err != nil {
		return notFound(what, err)
	}
	defer src.Close()
	if spec.SizeBytes < st.Size {
		return fmt.Errorf("the spec's size %d is smaller than the %d bytes of %s: give at least %d bytes",
			spec.SizeBytes, st.Size, what, st.Size)
	}
	var sum string
	if kind == disksDir {
		// The node (through its target) may have written through the
		// page cache: make the snapshot hold what it wrote.
		if err := src.Sync(); err != nil {
			return fmt.Errorf("fsync %s before the snapshot: %w", src.Name(), err)
		}
	} else if spec.SizeBytes == st.Size {
		m, err := readMeta(src)
		if err != nil {
			return err
		}
		sum = m.SHA256 // same bytes
	}
	if s.mode == store.CloneCopy {
		release, err := s.reserve(fmt.Sprintf("copy of %s into image %s/%s", what, spec.Project, spec.Name), min(st.Blocks*512, st.Size))
		if err != nil {
			return err
		}
		defer release()
	}
	return create(dir, spec.Name+rawExt, func(f *os.File) (meta, error) {
		if _, err := s.cloneFile(ctx, f, src, st.Size, spec.SizeBytes); err != nil {
			return meta{}, err
		}
		return meta{Kind: "image", Source: toSourceMeta(spec.Source), SHA256: sum}, nil
	})
}

// StatImage implements store.Store.
func (s *Store) StatImage(ctx context.Context, project, name string) (store.Image, error) {
	if err := ctx.Err(); err != nil {
		return store.Image{}, err
	}
	what := fmt.Sprintf("image %s/%s", project, name)
	if err := store.ValidateNames(project, name); err != nil {
		return store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	dir, err := s.openDir(imagesDir, project, false)
	if err != nil {
		return store.Image{}, notFound(what, err)
	}
	defer dir.Close()
	im, err := s.statImage(dir, project, name)
	if err != nil {
		return store.Image{}, notFound(what, err)
	}
	return im, nil
}

func (s *Store) statImage(dir *os.File, project, name string) (store.Image, error) {
	f, st, err := openRegular(dir, name+rawExt)
	if err != nil {
		return store.Image{}, err
	}
	defer f.Close()
	m, err := readMeta(f)
	if err != nil {
		return store.Image{}, err
	}
	return store.Image{Project: project, Name: name, Path: s.imagePath(project, name), SizeBytes: st.Size,
		Source: m.source(), SHA256: m.SHA256}, nil
}

// DeleteImage implements store.Store.
func (s *Store) DeleteImage(ctx context.Context, project, name string) error {
	return s.remove(ctx, imagesDir, project, name)
}

// ListImages implements store.Store.
func (s *Store) ListImages(ctx context.Context) ([]store.Image, error) {
	var out []store.Image
	err := s.walk(ctx, imagesDir, func(dir *os.File, project, name string) error {
		im, err := s.statImage(dir, project, name)
		if err == nil {
			out = append(out, im)
		}
		return err
	})
	return out, err
}

// remove deletes <kind>/<project>/<name>.raw; a missing file is not an
// error. Files being written (temp files) are not touched.
func (s *Store) remove(ctx context.Context, kind, project, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	what := fmt.Sprintf("delete %s %s/%s", strings.TrimSuffix(kind, "s"), project, name)
	if err := store.ValidateNames(project, name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	unlock, err := s.locks.Lock(ctx, kind+"/"+project+"/"+name)
	if err != nil {
		return err
	}
	defer unlock()
	dir, err := s.openDir(kind, project, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer dir.Close()
	if err := removeAt(dir, name+rawExt); err != nil {
		return fmt.Errorf("%s: %w: check the store directory's permissions", what, err)
	}
	return nil
}

// walk calls fn for every <kind>/<project>/<name>.raw with valid names, in
// the order of project then name. Entries that are not sanboot's (other
// names, links, directories) are skipped with a warning; a file removed
// while walking is skipped.
func (s *Store) walk(ctx context.Context, kind string, fn func(dir *os.File, project, name string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	kd, err := openDirAt(s.rootDir, s.root, kind)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer kd.Close()
	projects, err := readNames(kd, "")
	if err != nil {
		return err
	}
	for _, p := range projects {
		pd, err := openDirAt(kd, kd.Name(), p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			s.log.Warn("skipping an entry of the store", "err", err)
			continue
		}
		names, err := readNames(pd, rawExt)
		if err != nil {
			pd.Close()
			return err
		}
		for _, n := range names {
			err := fn(pd, p, n)
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case errors.Is(err, errNotRegular):
				s.log.Warn("skipping an entry of the store", "err", err)
			case err != nil:
				pd.Close()
				return err
			}
		}
		pd.Close()
	}
	return nil
}

// readNames returns the sorted names in dir that end in ext and, without
// it, are valid sanboot names: temp files and foreign entries are left out.
func readNames(dir *os.File, ext string) ([]string, error) {
	all, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dir.Name(), err)
	}
	var out []string
	for _, n := range all {
		stem, ok := strings.CutSuffix(n, ext)
		if ok && store.ValidateNames(stem, stem) == nil {
			out = append(out, stem)
		}
	}
	slices.Sort(out)
	return out, nil
}

// notFound turns a missing file or directory into store.ErrNotFound.
func notFound(what string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// create makes the new file name in dir: fill writes its bytes into a temp
// file and returns its description, which is set on it; the file is
// fsynced and renamed into place (never over an existing file: then
// fs.ErrExist), and the directory fsynced. On any failure the temp file
// is removed.
func create(dir *os.File, name string, fill func(f *os.File) (meta, error)) error {
	f, tmp, err := createTemp(dir, dir.Name())
	if err != nil {
		return err
	}
	closed, published := false, false
	defer func() {
		if !closed {
			f.Close()
		}
		if !published {
			unix.Unlinkat(int(dir.Fd()), tmp, 0)
		}
	}()
	m, err := fill(f)
	if err != nil {
		return err
	}
	if err := writeMeta(f, m); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err := publish(dir, tmp, name); err != nil {
		return err
	}
	published = true
	return nil
}
