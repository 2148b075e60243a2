package apiserver

import (
	"context"
	"time"

	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/controlplane/staging"
	"github.com/sanboot/sanboot/controlplane/state"
)

// uploadGC is the collector of the uploads staged on this member
// (staging.GC), reading the image specs, replicas and agents from etcd.
func (s *Server) uploadGC() staging.GC {
	return staging.GC{Area: s.cfg.Uploads, Member: s.cfg.Member, TTL: s.cfg.UploadTTL, Log: s.log,
		Read: func(ctx context.Context) (*state.Store, error) {
			return s.read(ctx, list(api.ImagesPrefix("")), list(api.ReplicasPrefix()), listKeys(api.AgentsPrefix()))
		}}
}

// collectUploads is one pass of the collector as if the time were now.
func (s *Server) collectUploads(ctx context.Context, now time.Time) ([]string, error) {
	return s.uploadGC().Collect(ctx, now)
}
