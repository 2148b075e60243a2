package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
	"github.com/sanboot/sanboot/internal/kv"
)

// exportLeaseTTL is the lease (seconds) of an export request key, kept
// alive while the export runs: if this member dies, the agent stops.
const exportLeaseTTL = 15

// export is one ExportImage in flight: the relay between the agent's push
// and the client's stream.
type export struct {
	id, agent string
	// attached is closed when the agent's push has sent its header.
	attached chan struct{}
	// chunks carries the pushed bytes to the client; closed after result
	// is set.
	chunks chan []byte
	result error
	size   int64
	// gone is closed when the client's stream ended; the push then stops.
	gone chan struct{}

	mu      sync.Mutex
	claimed bool
}

type exportTable struct {
	mu sync.Mutex
	m  map[string]*export
}

func newExportTable() exportTable { return exportTable{m: map[string]*export{}} }

func (t *exportTable) add(e *export) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[e.id] = e
}

func (t *exportTable) remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}

func (t *exportTable) get(id string) *export {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

// ExportImage streams an image from a Ready replica on a live agent. The
// agent is asked through etcd (an ExportRequest at api.ExportKey, under a
// lease of this member) and pushes the bytes to this member (PushExport);
// they are relayed as they come. The client verifies them against the
// image's status.sha256: the replica chosen has that sha256.
func (s *Server) ExportImage(req *sanbootv1.GetRequest, stream sanbootv1.Sanboot_ExportImageServer) error {
	if s.cfg.Member == "" {
		return status.Error(codes.FailedPrecondition, "this control-plane member relays no exports (it has no member name)")
	}
	ctx := stream.Context()
	ref, err := refOf(req.GetProject(), req.GetName())
	if err != nil {
		return err
	}
	st, err := s.read(ctx, get(api.ImageKey(ref.Project, ref.Name)), list(api.ReplicasPrefix()), listKeys(api.AlivePrefix()))
	if err != nil {
		return err
	}
	agent, err := exportSource(st, ref)
	if err != nil {
		return err
	}

	e := &export{id: newUID(), agent: agent, attached: make(chan struct{}), chunks: make(chan []byte, 4), gone: make(chan struct{})}
	s.exports.add(e)
	defer func() {
		close(e.gone)
		s.exports.remove(e.id)
	}()
	lease, err := s.cli.Grant(ctx, exportLeaseTTL)
	if err != nil {
		return etcdError(ctx, "grant a lease for the export", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		s.cli.Revoke(rctx, lease.ID) // deletes the request key
	}()
	kctx, stopKeepAlive := context.WithCancel(ctx)
	defer stopKeepAlive()
	if _, err := s.cli.KeepAlive(kctx, lease.ID); err != nil {
		return etcdError(ctx, "keep the export's lease alive", err)
	}
	put, err := kv.PutOp(api.ExportKey(agent, e.id), &sanbootv1.ExportRequest{
		ExportId: e.id, Project: ref.Project, Image: ref.Name, Member: s.cfg.Member,
	}, clientv3.WithLease(lease.ID))
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if _, err := s.cli.Do(ctx, put); err != nil {
		return etcdError(ctx, "write the export request", err)
	}
	s.log.Info("export requested", "image", ref, "agent", agent, "export", e.id)

	timer := time.NewTimer(s.cfg.ExportStartTimeout)
	defer timer.Stop()
	select {
	case <-e.attached:
	case <-timer.C:
		return status.Errorf(codes.Unavailable, "agent %q did not start sending image %q within %s: check that it runs a version "+
			"with exports and can reach control-plane member %q's API (its log says why), then export again",
			agent, ref.Name, s.cfg.ExportStartTimeout, s.cfg.Member)
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	var sent int64
	for {
		select {
		case data, ok := <-e.chunks:
			if !ok {
				if e.result == nil && sent != e.size {
					return status.Errorf(codes.Internal, "relayed %d bytes of %d", sent, e.size)
				}
				if e.result == nil {
					s.log.Info("export done", "image", ref, "agent", agent, "bytes", sent)
				}
				return e.result
			}
			if err := stream.Send(&sanbootv1.Chunk{Data: data}); err != nil {
				return err
			}
			sent += int64(len(data))
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// exportSource picks the agent to read an image from: a live one with a
// Ready replica whose sha256 is the image's recorded one, first by name.
func exportSource(st *state.Store, ref state.Ref) (string, error) {
	im := view.Image(st, ref, nil)
	if im == nil {
		return "", notFound("image", ref)
	}
	want := im.GetStatus().GetSha256()
	reps := st.Replicas[ref]
	var seen []string
	for _, a := range slices.Sorted(maps.Keys(reps)) {
		r := reps[a].Msg
		alive := st.IsAlive(a)
		if r.GetPhase() == api.ReplicaReady && alive && r.GetSha256() == want {
			return a, nil
		}
		what := r.GetPhase()
		if !alive {
			what += ", agent unavailable"
		}
		seen = append(seen, fmt.Sprintf("%s: %s", a, what))
	}
	if len(seen) == 0 {
		seen = []string{"none"}
	}
	return "", status.Errorf(codes.FailedPrecondition, "no live agent holds a Ready replica of %s (replicas: %s): wait until one does (sanbootctl get image %s -o wide)",
		describe("image", ref), strings.Join(seen, "; "), ref.Name)
}

// PushExport receives an agent's bytes for an export in flight on this
// member and hands them to ExportImage.
func (s *Server) PushExport(stream sanbootv1.AgentData_PushExportServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return recvError(ctx, err, "the push's header")
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "a push starts with a header (export id, agent, size)")
	}
	e := s.exports.get(h.GetExportId())
	if e == nil {
		return status.Errorf(codes.NotFound, "no export %q in flight on member %q: it ended (its client went away)", h.GetExportId(), s.cfg.Member)
	}
	if h.GetAgent() != e.agent {
		return status.Errorf(codes.PermissionDenied, "export %q was asked of agent %q, not %q", e.id, e.agent, h.GetAgent())
	}
	e.mu.Lock()
	claimed := e.claimed
	e.claimed = true
	e.mu.Unlock()
	if claimed {
		return status.Errorf(codes.AlreadyExists, "export %q is already being pushed", e.id)
	}
	e.size = h.GetSizeBytes()
	close(e.attached)
	finish := func(err error) {
		e.result = err
		close(e.chunks)
	}
	if msg := h.GetError(); msg != "" {
		finish(status.Errorf(codes.FailedPrecondition, "agent %q cannot export the image: %s", e.agent, msg))
		return stream.SendAndClose(&sanbootv1.PushExportResponse{})
	}
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			finish(status.Errorf(codes.Unavailable, "agent %q stopped sending after %d of %d bytes (%v): export again", e.agent, n, e.size, err))
			return recvError(ctx, err, "the push")
		}
		data := msg.GetChunk()
		n += int64(len(data))
		if n > e.size {
			err := status.Errorf(codes.DataLoss, "agent %q sent more than the %d bytes it announced", e.agent, e.size)
			finish(err)
			return err
		}
		select {
		case e.chunks <- data:
		case <-e.gone:
			return status.Error(codes.Canceled, "the client of the export went away")
		}
	}
	if n != e.size {
		err := status.Errorf(codes.DataLoss, "agent %q sent %d of the %d bytes it announced", e.agent, n, e.size)
		finish(err)
		return err
	}
	finish(nil)
	return stream.SendAndClose(&sanbootv1.PushExportResponse{})
}
