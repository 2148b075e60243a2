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
