package staging

import (
	"context"
	"log/slog"
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

// GC is the garbage collector of one member's staged uploads. Every
// member collects its own: uploads live on the member that received them.
type GC struct {
	Area *Area
	// Member is this member's name, as image specs name it in
	// UploadSource.member.
	Member string
	// TTL is how long an upload no image refers to is kept.
	TTL time.Duration
	// Read reads the image specs, their replicas and the registered
	// agents (the API server reads them from etcd).
	Read func(context.Context) (*state.Store, error)
	Log  *slog.Logger
}

// Run collects now and every interval until ctx ends.
func (g GC) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := g.Collect(ctx, time.Now()); err != nil && ctx.Err() == nil {
			g.Log.Warn("collecting staged uploads failed; trying again later", "err", err, "in", interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Collect removes the staged uploads of this member that are no longer
// needed, and returns their ids:
//   - an upload that images refer to (UploadSource with its id and this
//     member) goes once every one of those images has a Ready replica with
//     the upload's sha256 on every agent it wants (spec.agents, or every
//     registered agent when that is empty);
//   - an upload no image refers to goes when it is older than TTL (the
//     client never created its image, or the image was deleted).
//
// An agent that registers after an upload was collected cannot fetch it;
// its replica says so (import the image again).
func (g GC) Collect(ctx context.Context, now time.Time) ([]string, error) {
	entries, err := g.Area.List()
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	st, err := g.Read(ctx)
	if err != nil {
		return nil, err
	}
	users := map[string][]state.Ref{}
	for ref, rec := range st.Images {
		up := rec.Msg.GetSpec().GetSource().GetUpload()
		if up == nil || up.GetMember() != g.Member {
			continue
		}
		users[up.GetUploadId()] = append(users[up.GetUploadId()], ref)
	}
	var removed []string
	for _, e := range entries {
		refs := users[e.ID]
		var why string
		switch {
		case len(refs) == 0 && now.Sub(e.Staged) >= g.TTL:
			why = "no image refers to it"
		case len(refs) > 0 && allReplicated(st, refs):
			why = "every wanted replica is Ready"
		default:
			continue
		}
		if err := g.Area.Remove(e.ID); err != nil {
			g.Log.Warn("cannot remove a staged upload", "upload", e.ID, "err", err)
			continue
		}
		g.Log.Info("staged upload removed", "upload", e.ID, "bytes", e.Size, "reason", why, "age", now.Sub(e.Staged).Round(time.Second))
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
