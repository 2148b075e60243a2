package rbd

import (
	"context"
	"fmt"
	"sync"

	"github.com/sanboot/sanboot/agent/store"
)

// Clone depth (as ceph-csi bounds it). An image made from a node's
// snapshot or copied from another image is a clone: every level of its
// chain of parents costs the reads that miss. Past the soft limit
// (Options.MaxCloneDepth) the image is published at once and flattened in
// the background (rbd flatten copies its parents' data into it; its
// snapshot, and the disks cloned from it, stay valid thanks to
// deep-flatten). Past the hard limit (twice the soft one), which only an
// operator who chains snapshots faster than flattens finish reaches, the
// new image is flattened before it is published, as sanboot did before.
//
// Flattening is level-triggered: every EnsureImage of a clone measures its
// depth and starts a flatten unless one runs; a flatten cut short (the
// agent stopped, the image was deleted) leaves a valid, partly copied
// image that the next EnsureImage flattens again. EnsureImage reports the
// depth and whether a flatten runs (store.Image), and the agent puts them
// in its ImageReplica, so that `sanbootctl describe image` shows them.

// flattens are the background flattens of a Store, by RBD image name.
type flattens struct {
	mu   sync.Mutex
	jobs map[string]*flattenJob
	wg   sync.WaitGroup
}

type flattenJob struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// running reports whether image n is being flattened.
func (f *flattens) running(n string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[n] != nil
}

// start runs fn(ctx) for image n in the background unless a job for n
// runs; ctx ends when the job is stopped.
func (f *flattens) start(n string, fn func(ctx context.Context)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jobs == nil {
		f.jobs = map[string]*flattenJob{}
	}
	if f.jobs[n] != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	job := &flattenJob{cancel: cancel, done: make(chan struct{})}
	f.jobs[n] = job
	f.wg.Go(func() {
		defer func() {
			cancel()
			f.mu.Lock()
			delete(f.jobs, n)
			f.mu.Unlock()
			close(job.done)
		}()
		fn(ctx)
	})
}

// stop cancels the flatten of image n, if one runs, and waits for it.
func (f *flattens) stop(n string) {
	f.mu.Lock()
	job := f.jobs[n]
	f.mu.Unlock()
	if job != nil {
		job.cancel()
		<-job.done
	}
}

// stopAll cancels every flatten and waits for them.
func (f *flattens) stopAll() {
	f.mu.Lock()
	for _, job := range f.jobs {
		job.cancel()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// hardDepth is the depth past which a new image is flattened before it is
// published.
func (s *Store) hardDepth() int { return 2 * s.maxDepth }

// isClone: images of these sources are RBD clones.
func isClone(src store.Source) bool {
	return src.Kind == store.SourceCopy || src.Kind == store.SourceSnapshot
}

// boundDepth measures the chain of parents of the published image n (of
// im) and, past the soft limit, starts flattening it in the background;
// it fills im's CloneDepth and Flattening.
func (s *Store) boundDepth(ctx context.Context, n string, im *store.Image) error {
	if !isClone(im.Source) {
		return nil
	}
	depth, err := s.depth(ctx, n)
	if err != nil {
		return fmt.Errorf("image %s/%s: measure its chain of parents: %w", im.Project, im.Name, err)
	}
	im.CloneDepth = depth
	if depth <= s.maxDepth {
		return nil
	}
	im.Flattening = true
	if s.flats.running(n) {
		return nil
	}
	s.log.Info("flattening an image in the background: its chain of parents is longer than the limit", "image", n, "depth", depth, "max", s.maxDepth)
	s.flats.start(n, func(ctx context.Context) { s.flatten(ctx, n, depth) })
	return nil
}

// flatten copies the data of image n's parents into it and records that
// it did (meta.Flattened). Failures are logged: the next EnsureImage of
// the image starts again.
func (s *Store) flatten(ctx context.Context, n string, depth int) {
	long := s.c
	long.timeout = 0 // as long as the image's data takes; stop() cancels it
	_, err := long.run(ctx, "flatten", "--no-progress", n)
	if err != nil && !isEINVAL(err) { // EINVAL: it has no parent (flattened meanwhile, by another agent of the pool)
		if ctx.Err() == nil {
			s.log.Warn("flattening an image failed; the agent tries again at its next pass over the image", "image", n, "depth", depth, "err", err)
		}
		return
	}
	m, err := s.readMeta(ctx, n)
	if err == nil {
		m.Flattened = true
		err = s.writeMeta(ctx, n, m)
	}
	if err != nil {
		s.log.Warn("flattened an image but could not record it (harmless: its depth is measured again)", "image", n, "err", err)
	}
	s.log.Info("flattened an image: it reads through no other image now", "image", n, "depthBefore", depth)
}
