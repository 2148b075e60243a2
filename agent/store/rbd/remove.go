package rbd

import (
	"context"
	"fmt"
	"strings"
	"syscall"
)

// errAlreadyProtected is what `rbd snap protect` exits with for a
// snapshot that is protected already.
const errAlreadyProtected = syscall.EBUSY

type imageInfo struct {
	ID     string `json:"id"`
	Parent *struct {
		Image    string `json:"image"`
		Snapshot string `json:"snapshot"`
		Pool     string `json:"pool"`
	} `json:"parent"`
}

type snapInfo struct {
	Name      string `json:"name"`
	Protected string `json:"protected"` // "true" or "false": a string in rbd's JSON
}

// remove removes image n with its snapshots, unless a clone depends on one
// of them: then n is renamed old.<id>.<n> (if it is not already) and kept
// for its clones. A missing n is not an error. After n is gone, its parent
// goes too if it was deleted (old.*) and n was its last clone.
func (s *Store) remove(ctx context.Context, n string) error {
	var info imageInfo
	if err := s.c.json(ctx, &info, "info", n); err != nil {
		if isNotFound(err) && strings.HasPrefix(n, retiredPrefix) {
			// Listed but without a header: an rm that another agent's
			// open (its watch) interrupted half-way. rm finishes it. Only
			// for old.* names, which are never made again.
			if _, err := s.c.run(ctx, "rm", "--no-progress", n); err != nil && !isGone(err) {
				return err
			}
			return nil
		}
		if isNotFound(err) {
			return nil
		}
		return err
	}
	var snaps []snapInfo
	if err := s.c.json(ctx, &snaps, "snap", "ls", n); err != nil {
		return err
	}
	var dependents []string
	for _, sn := range snaps {
		var children []struct {
			Image string `json:"image"`
		}
		if err := s.c.json(ctx, &children, "children", n+"@"+sn.Name); err != nil {
			return err
		}
		for _, c := range children {
			dependents = append(dependents, c.Image)
		}
	}
	if len(dependents) > 0 {
		if strings.HasPrefix(n, retiredPrefix) {
			return nil // still needed
		}
		old := retiredPrefix + info.ID + "." + n
		if _, err := s.c.run(ctx, "rename", n, old); isGone(err) {
			return nil // another agent of the pool removed or retired it meanwhile
		} else if err != nil {
			return fmt.Errorf("keep %s for its clones (%s) as %s: %w", n, strings.Join(dependents, ", "), old, err)
		}
		s.log.Info("deleted an RBD image that clones still read from: kept as "+old+" until the last of them goes",
			"image", n, "clones", dependents)
		return nil
	}
	for _, sn := range snaps {
		if sn.Protected == "true" {
			if _, err := s.c.run(ctx, "snap", "unprotect", n+"@"+sn.Name); err != nil && !isEINVAL(err) {
				return err
			}
		}
		if _, err := s.c.run(ctx, "snap", "rm", "--no-progress", n+"@"+sn.Name); err != nil && !isNotFound(err) {
			return err
		}
	}
	if _, err := s.c.run(ctx, "rm", "--no-progress", n); err != nil && !isGone(err) {
		if errIs(err, syscall.EBUSY) {
			return fmt.Errorf("%w: the image is still open (a target serving it, here or on another agent?): delete the target first", err)
		}
		return err
	}
	if p := info.Parent; p != nil && p.Pool == s.c.pool && strings.HasPrefix(p.Image, retiredPrefix) {
		return s.remove(ctx, p.Image)
	}
	return nil
}

// isGone: the image went meanwhile (another agent of the pool removed it:
// ENOENT, or ESTALE when it went during the call).
func isGone(err error) bool { return isNotFound(err) || errIs(err, syscall.ESTALE) }

// collect removes the deleted images (old.*) whose clones are all gone.
// Deletion of a clone removes its parent at once; this sweep finishes what
// a step interrupted (a crash, or another agent of the pool deleting the
// same images at the same time) left. Failures are logged: the next sweep
// tries again.
func (s *Store) collect(ctx context.Context) {
	names, err := s.names(ctx)
	if err != nil {
		s.log.Warn("could not list the pool to collect deleted images", "err", err)
		return
	}
	for _, n := range names {
		if strings.HasPrefix(n, retiredPrefix) {
			if err := s.remove(ctx, n); err != nil {
				s.log.Warn("could not remove a deleted image whose clones are gone; the next deletion tries again", "image", n, "err", err)
			}
		}
	}
}

// depth is the number of parents above image n.
func (s *Store) depth(ctx context.Context, n string) (int, error) {
	d := 0
	for {
		var info imageInfo
		if err := s.c.json(ctx, &info, "info", n); err != nil {
			return 0, err
		}
		if info.Parent == nil || info.Parent.Pool != s.c.pool {
			return d, nil
		}
		d++
		if d > 64 {
			return d, nil
		}
		n = info.Parent.Image
	}
}
