package rbd

import (
	"context"
	"errors"
	"fmt"

	"github.com/sanboot/sanboot/agent/store"
)

// Clone implements store.Store: the disk is an RBD clone of the image's
// protected snapshot, made under a temp name and renamed into place. An
// existing disk is returned unchanged.
func (s *Store) Clone(ctx context.Context, project, image, node, owner string) (store.Disk, error) {
	if err := store.CheckClone(ctx, project, image, node); err != nil {
		return store.Disk{}, err
	}
	what := fmt.Sprintf("disk of node %s/%s (clone of image %s)", project, node, image)
	final := diskName(project, node)
	unlock, err := s.locks.Lock(ctx, final)
	if err != nil {
		return store.Disk{}, err
	}
	defer unlock()
	if d, err := s.statDisk(ctx, project, node); err == nil {
		return d, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Disk{}, err
	}
	im, err := s.images.get(imageName(project, image), func() (store.Image, error) { return s.statImage(ctx, project, image) })
	if err != nil {
		return store.Disk{}, fmt.Errorf("clone for node %s: %w", node, err)
	}
	c, err := s.recentCapacity(ctx)
	if err != nil {
		return store.Disk{}, err
	}
	if im.SizeBytes > c.FreeBytes {
		return store.Disk{}, store.NoSpace(what, im.SizeBytes, c.FreeBytes)
	}
	tmp := s.newTmp()
	m := meta{Kind: "disk", Name: final, SizeBytes: im.SizeBytes, Image: image, Owner: owner}
	err = s.makeDisk(ctx, tmp, final, imageName(project, image), m)
	if err != nil {
		if rmErr := s.remove(ctx, tmp); rmErr != nil {
			s.log.Warn("could not remove a temp image; the agent removes it when it starts again", "image", tmp, "err", rmErr)
		}
		if isNotFound(err) {
			s.images.forget(imageName(project, image)) // deleted by another agent of the pool
		}
		return store.Disk{}, notFound(what, err)
	}
	switch err := s.publish(ctx, tmp, final); {
	case isExist(err): // made by another agent meanwhile: its disk
		return s.statDisk(ctx, project, node)
	case err != nil:
		return store.Disk{}, fmt.Errorf("%s: %w", what, err)
	}
	return s.disk(project, node, m), nil // what was just written: no need to read it back
}

// disk is the store.Disk of node's disk described by m.
func (s *Store) disk(project, node string, m meta) store.Disk {
	return store.Disk{Project: project, Node: node, Image: m.Image, Owner: m.Owner, Path: store.RBDPath(s.c.pool, diskName(project, node)),
		SizeBytes: m.SizeBytes, CloneMode: store.CloneRBD}
}

func (s *Store) makeDisk(ctx context.Context, tmp, final, parent string, m meta) error {
	if _, err := s.c.run(ctx, "clone", parent+"@"+baseSnap, s.c.pool+"/"+tmp); err != nil {
		return err
	}
	return s.writeMeta(ctx, tmp, m)
}

// StatDisk implements store.Store.
func (s *Store) StatDisk(ctx context.Context, project, node string) (store.Disk, error) {
	if err := ctx.Err(); err != nil {
		return store.Disk{}, err
	}
	if err := store.ValidateNames(project, node); err != nil {
		return store.Disk{}, fmt.Errorf("disk of node %s/%s: %w", project, node, err)
	}
	return s.statDisk(ctx, project, node)
}

func (s *Store) statDisk(ctx context.Context, project, node string) (store.Disk, error) {
	n := diskName(project, node)
	m, err := s.readMeta(ctx, n)
	if err == nil {
		err = errNotSanboot(m, "disk")
	}
	if err != nil {
		return store.Disk{}, notFound(fmt.Sprintf("disk of node %s/%s", project, node), err)
	}
	return s.disk(project, node, m), nil
}

// DeleteDisk implements store.Store: the disk goes, or, while an image made
// from its snapshot lives, is renamed old.* and goes with it. A disk still
// open (a target serves it) is not removed: rbd says it has watchers.
func (s *Store) DeleteDisk(ctx context.Context, project, node string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.ValidateNames(project, node); err != nil {
		return fmt.Errorf("delete disk of node %s/%s: %w", project, node, err)
	}
	n := diskName(project, node)
	unlock, err := s.locks.Lock(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.remove(ctx, n); err != nil {
		return fmt.Errorf("delete disk of node %s/%s: %w", project, node, err)
	}
	s.collect(ctx)
	return nil
}

// ListDisks implements store.Store. The agent lists its disks at every
// resync: when the pool holds deleted images (old.*), it also removes
// those whose clones are gone (collect), so that what two agents deleting
// at once, or a crash, left half done is finished without waiting for
// another deletion.
func (s *Store) ListDisks(ctx context.Context) ([]store.Disk, error) {
	var out []store.Disk
	retired, err := s.walk(ctx, diskPrefix, func(project, node string) error {
		d, err := s.statDisk(ctx, project, node)
		if err == nil {
			out = append(out, d)
		}
		return err
	})
	if retired && err == nil {
		s.collect(ctx)
	}
	return out, err
}
