package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sanboot/sanboot/agent/store"
)

// Clone implements store.Store. An existing disk is returned unchanged;
// otherwise the image is reflinked (or copied, in copy mode) into a temp
// file that is fsynced and renamed into place, so a crash never leaves a
// half disk under the node's name.
//
// Space: a reflink clone takes no space up front, but, as the Store
// contract asks, a disk larger than the free space is refused with
// ErrNoSpace so that the node can write its whole disk once. In copy mode
// that check also covers the copy itself (which writes at most the
// image's size).
func (s *Store) Clone(ctx context.Context, project, image, node, owner string) (store.Disk, error) {
	if err := store.CheckClone(ctx, project, image, node); err != nil {
		return store.Disk{}, err
	}
	what := fmt.Sprintf("disk of node %s/%s (clone of image %s)", project, node, image)
	unlock, err := s.locks.Lock(ctx, disksDir+"/"+project+"/"+node)
	if err != nil {
		return store.Disk{}, err
	}
	defer unlock()
	if d, err := s.StatDisk(ctx, project, node); err == nil {
		return d, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Disk{}, err
	}

	idir, err := s.openDir(imagesDir, project, false)
	if err != nil {
		return store.Disk{}, notFound(fmt.Sprintf("clone image %s/%s for node %s", project, image, node), err)
	}
	defer idir.Close()
	src, st, err := openRegular(idir, image+rawExt)
	if err != nil {
		return store.Disk{}, notFound(fmt.Sprintf("clone image %s/%s for node %s", project, image, node), err)
	}
	defer src.Close()
	release, err := s.reserve(what, st.Size)
	if err != nil {
		return store.Disk{}, err
	}
	defer release()

	dir, err := s.openDir(disksDir, project, true)
	if err != nil {
		return store.Disk{}, fmt.Errorf("%s: %w", what, err)
	}
	defer dir.Close()
	err = create(dir, node+rawExt, func(f *os.File) (meta, error) {
		mode, err := s.cloneFile(ctx, f, src, st.Size, st.Size)
		return meta{Kind: "disk", Image: image, Owner: owner, CloneMode: string(mode)}, err
	})
	if err != nil && !errors.Is(err, fs.ErrExist) { // ErrExist: made by someone else meanwhile
		return store.Disk{}, fmt.Errorf("%s: %w", what, err)
	}
	d, err := s.statDisk(dir, project, node)
	if err != nil {
		return store.Disk{}, fmt.Errorf("%s: %w", what, err)
	}
	return d, nil
}

// StatDisk implements store.Store.
func (s *Store) StatDisk(ctx context.Context, project, node string) (store.Disk, error) {
	if err := ctx.Err(); err != nil {
		return store.Disk{}, err
	}
	what := fmt.Sprintf("disk of node %s/%s", project, node)
	if err := store.ValidateNames(project, node); err != nil {
		return store.Disk{}, fmt.Errorf("%s: %w", what, err)
	}
	dir, err := s.openDir(disksDir, project, false)
	if err != nil {
		return store.Disk{}, notFound(what, err)
	}
	defer dir.Close()
	d, err := s.statDisk(dir, project, node)
	if err != nil {
		return store.Disk{}, notFound(what, err)
	}
	return d, nil
}

func (s *Store) statDisk(dir *os.File, project, node string) (store.Disk, error) {
	f, st, err := openRegular(dir, node+rawExt)
	if err != nil {
		return store.Disk{}, err
	}
	defer f.Close()
	m, err := readMeta(f)
	if err != nil {
		return store.Disk{}, err
	}
	return store.Disk{Project: project, Node: node, Image: m.Image, Owner: m.Owner, Path: filepath.Join(s.root, disksDir, project, node+rawExt),
		SizeBytes: st.Size, CloneMode: store.CloneMode(m.CloneMode)}, nil
}

// DeleteDisk implements store.Store.
func (s *Store) DeleteDisk(ctx context.Context, project, node string) error {
	return s.remove(ctx, disksDir, project, node)
}

// ListDisks implements store.Store.
func (s *Store) ListDisks(ctx context.Context) ([]store.Disk, error) {
	var out []store.Disk
	err := s.walk(ctx, disksDir, func(dir *os.File, project, node string) error {
		d, err := s.statDisk(dir, project, node)
		if err == nil {
			out = append(out, d)
		}
		return err
	})
	return out, err
}
