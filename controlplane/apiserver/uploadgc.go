package apiserver

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
)

// DefaultUploadTTL is how long a staged upload that no image refers to is
// kept: long enough for a client to create its image after the upload.
const DefaultUploadTTL = 24 * time.Hour

// runUploadGC collects staged uploads now and every UploadGCInterval
// until ctx ends. Every member collects its own: uploads live on the
// member that received them.
func (s *Server) runUploadGC(ctx context.Context) {
	t := time.NewTicker(s.cfg.UploadGCInterval)
	defer t.Stop()
	for {
		if _, err := s.collectUploads(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("collecting staged uploads failed; trying again later", "err", err, "in", s.cfg.UploadGCInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// collectUploads removes the staged uploads of this member that are no
// longer needed, and returns their ids:
//   - an upload that images refer to (UploadSource with its id and this
//     member) goes once every one of those images has a Ready replica with
//     the upload's sha256 on every agent it wants (spec.agents, or every
//     registered agent when that is empty);
//   - an upload no image refers to goes when it is older than UploadTTL
//     (the client never created its image, or the image was deleted).
//
// An agent that registers after an upload was collected cannot fetch it;
// its replica says so (import the image again).
func (s *Server) collectUploads(ctx context.Context, now time.Time) ([]string, error) {
	entries, err := s.cfg.Uploads.List()
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	st, err := s.read(ctx, list(api.ImagesPrefix("")), list(api.ReplicasPrefix()), listKeys(api.AgentsPrefix()))
	if err != nil {
		return nil, err
	}
	users := map[string][]state.Ref{}
	for ref, rec := range st.Images {
		up := rec.Msg.GetSpec().GetSource().GetUpload()
		if up == nil || up.GetMember() != s.cfg.Member {
			continue
		}
		users[up.GetUploadId()] = append(users[up.GetUploadId()], ref)
	}
	var removed []string
	for _, e := range entries {
		refs := users[e.ID]
		var why string
		switch {
		case len(refs) == 0 && now.Sub(e.Staged) >= s.cfg.UploadTTL:
			why = "no image refers to it"
		case len(refs) > 0 && allReplicated(st, refs):
			why = "every wanted replica is Ready"
		default:
			continue
		}
		if err := s.cfg.Uploads.Remove(e.ID); err != nil {
			s.log.Warn("cannot remove a staged upload", "upload", e.ID, "err", err)
			continue
		}
		s.log.Info("staged upload removed", "upload", e.ID, "bytes", e.Size, "reason", why, "age", now.Sub(e.Staged).Round(time.Second))
		removed = append(removed, e.ID)
	}
	return removed, nil
}

// allReplicated reports whether each image has a Ready replica with its
// upload's sha256 on every agent it wants.
func allReplicated(st *state.Store, refs []state.Ref) bool {
	for _, ref := range refs {
		im := st.Images[ref].Msg
		wanted := im.GetSpec().GetAgents()
		if len(wanted) == 0 {
			wanted = slices.Collect(maps.Keys(st.Agents))
		}
		if len(wanted) == 0 {
			return false
		}
		sum := im.GetSpec().GetSource().GetUpload().GetSha256()
		for _, a := range wanted {
			r, ok := st.Replicas[ref][a]
			if !ok || !replicaHas(r.Msg, sum) {
				return false
			}
		}
	}
	return true
}

func replicaHas(r *sanbootv1.ImageReplica, sum string) bool {
	return r.GetPhase() == api.ReplicaReady && (sum == "" || r.GetSha256() == sum)
}
