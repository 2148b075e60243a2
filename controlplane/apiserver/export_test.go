package apiserver

import (
	"context"
	"time"
)

// CollectUploads runs one pass of the staged-upload collector as if the
// time were now, for tests.
func CollectUploads(ctx context.Context, s *Server, now time.Time) ([]string, error) {
	return s.collectUploads(ctx, now)
}

// CacheHold holds back the watch cache of a Server: while paused, the
// batches its etcd watch delivers wait before they are applied, as when
// the cache is slow or cut off.
type CacheHold struct{ s *Server }

// HoldCache returns the CacheHold of s.
func HoldCache(s *Server) *CacheHold { return &CacheHold{s} }

// Pause holds back every batch from now on (one being applied finishes).
func (h *CacheHold) Pause() { h.s.cfg.Informer.Pause() }

// Resume lets the held batches through.
func (h *CacheHold) Resume() { h.s.cfg.Informer.Resume() }

// CacheRevision is the revision s's cache is at.
func CacheRevision(s *Server) int64 { return s.cache.revision() }

// WatchesWaiting is how many watches wait for s's cache to catch up.
func WatchesWaiting(s *Server) int {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	return s.cache.waiting
}
