package filestore

import (
	"context"
	"fmt"
	"os"

	"github.com/sanboot/sanboot/agent/store"
)

// OpenImage opens an image's bytes for reading (the agent's exports), with
// the same care as every other path of the store (no link followed). The
// caller closes the file. An image that is deleted meanwhile stays readable
// through the open file. store.ErrNotFound when the store lacks it.
func (s *Store) OpenImage(ctx context.Context, project, name string) (*os.File, store.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, store.Image{}, err
	}
	what := fmt.Sprintf("image %s/%s", project, name)
	if err := store.ValidateNames(project, name); err != nil {
		return nil, store.Image{}, fmt.Errorf("%s: %w", what, err)
	}
	dir, err := s.openDir(imagesDir, project, false)
	if err != nil {
		return nil, store.Image{}, notFound(what, err)
	}
	defer dir.Close()
	f, st, err := openRegular(dir, name+rawExt)
	if err != nil {
		return nil, store.Image{}, notFound(what, err)
	}
	m, err := readMeta(f)
	if err != nil {
		f.Close()
		return nil, store.Image{}, err
	}
	return f, store.Image{Project: project, Name: name, Path: s.imagePath(project, name), SizeBytes: st.Size,
		Source: m.source(), SHA256: m.SHA256}, nil
}
