// Package export answers the export requests of control-plane members:
// it sends an image's bytes from the agent's store to the member that
// asked, which relays them to the client of ExportImage.
//
// Nothing connects to an agent. A member that serves an export writes an
// ExportRequest at api.ExportKey(agent, id) under a lease of its own; the
// exporter mirrors its agent's prefix (api.ExportsPrefix, and nothing
// else), and for every new request opens the image, looks up the member's
// API address in etcd (api.MemberKey) and streams the file to it with
// PushExport: a header (export id, agent, size), then chunks. When the
// image cannot be read, the header carries the reason instead, so that
// the client learns it at once. When the request key goes (the export
// ended, its client went away, the member died), a push still running is
// cancelled. Each request is answered once; a failed push is not retried
// (the member accepts one push per export): the client exports again.
package export

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/agent/members"
	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
)

// ChunkSize is the most bytes sent in one message (a member accepts
// messages up to gRPC's default 4 MiB).
const ChunkSize = 1 << 20

// Images opens the images of the agent's store (filestore.Store does).
type Images interface {
	OpenImage(ctx context.Context, project, name string) (*os.File, store.Image, error)
}

// Config is what an Exporter works with.
type Config struct {
	// Agent is this agent's name.
	Agent  string
	Client *clientv3.Client
	// Images are read from here; nil means a store without bytes (the
	// fake): every request is answered with an error saying so.
	Images Images
	// TLS secures connections to members (package tlsconfig; nil:
	// plaintext).
	TLS *tls.Config
	Log *slog.Logger
}

// Exporter answers its agent's export requests. Create with New, start
// with Run.
type Exporter struct {
	cfg Config
	log *slog.Logger
	wg  sync.WaitGroup

	mu sync.Mutex
	// requests seen and not yet deleted; the func cancels a push still
	// running (a no-op after it ended).
	active map[string]context.CancelFunc
}

// New checks cfg and returns an exporter.
func New(cfg Config) (*Exporter, error) {
	if err := api.ValidateName("agent", cfg.Agent); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		return nil, errors.New("export: Client is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Exporter{cfg: cfg, log: cfg.Log.With("component", "export", "agent", cfg.Agent), active: map[string]context.CancelFunc{}}, nil
}

// Run answers requests until ctx ends, then cancels the pushes in flight
// and waits for them.
func (e *Exporter) Run(ctx context.Context) error {
	defer e.wg.Wait()
	err := kv.Reflect(ctx, e.cfg.Client, api.ExportsPrefix(e.cfg.Agent), e.log, func(b kv.Batch) { e.handle(ctx, b) })
	e.mu.Lock()
	for _, cancel := range e.active {
		cancel()
	}
	e.mu.Unlock()
	return err
}

func (e *Exporter) handle(ctx context.Context, b kv.Batch) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range b.Events {
		if ev.Deleted {
			if cancel, ok := e.active[ev.Key]; ok {
				cancel()
				delete(e.active, ev.Key)
			}
			continue
		}
		if _, ok := e.active[ev.Key]; ok {
			continue // answered already, or being answered
		}
		var req sanbootv1.ExportRequest
		if err := proto.Unmarshal(ev.Value, &req); err != nil {
			e.log.Warn("ignoring an export request this agent cannot read; upgrade it", "key", ev.Key, "err", err)
			e.active[ev.Key] = func() {}
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		e.active[ev.Key] = cancel
		e.wg.Go(func() {
			defer cancel()
			if err := e.push(pctx, &req); err != nil && pctx.Err() == nil {
				e.log.Warn("export failed", "export", req.GetExportId(), "image", req.GetProject()+"/"+req.GetImage(),
					"member", req.GetMember(), "err", err)
			}
		})
	}
}

// push sends one image to the member that asked for it.
func (e *Exporter) push(ctx context.Context, req *sanbootv1.ExportRequest) error {
	f, im, openErr := e.open(ctx, req)
	if f != nil {
		defer f.Close()
	}
	conn, err := members.Dial(ctx, e.cfg.Client, req.GetMember(), e.cfg.TLS)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := sanbootv1.NewAgentDataClient(conn).PushExport(ctx)
	if err != nil {
		return fmt.Errorf("push to control-plane member %q: %w", req.GetMember(), err)
	}
	h := &sanbootv1.PushExportHeader{ExportId: req.GetExportId(), Agent: e.cfg.Agent, SizeBytes: im.SizeBytes}
	if openErr != nil {
		h.Error = openErr.Error()
	}
	if err := stream.Send(&sanbootv1.PushExportRequest{Part: &sanbootv1.PushExportRequest_Header{Header: h}}); err != nil {
		_, err = stream.CloseAndRecv()
		return fmt.Errorf("push to control-plane member %q: %w", req.GetMember(), err)
	}
	if openErr != nil {
		_, err := stream.CloseAndRecv()
		return errors.Join(openErr, err)
	}
	e.log.Info("exporting", "export", req.GetExportId(), "image", req.GetProject()+"/"+req.GetImage(), "member", req.GetMember(), "bytes", im.SizeBytes)
	buf := make([]byte, ChunkSize)
	for off := int64(0); off < im.SizeBytes; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), im.SizeBytes-off)], off)
		if n > 0 {
			if err := stream.Send(&sanbootv1.PushExportRequest{Part: &sanbootv1.PushExportRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				_, err = stream.CloseAndRecv()
				return fmt.Errorf("push to control-plane member %q after %d bytes: %w", req.GetMember(), off, err)
			}
			off += int64(n)
		}
		if err != nil && (!errors.Is(err, io.EOF) || off < im.SizeBytes) {
			return fmt.Errorf("read image %s/%s at %d: %w", req.GetProject(), req.GetImage(), off, err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return fmt.Errorf("push to control-plane member %q: %w", req.GetMember(), err)
	}
	e.log.Info("export sent", "export", req.GetExportId(), "image", req.GetProject()+"/"+req.GetImage(), "bytes", im.SizeBytes)
	return nil
}

// open opens the image a request names; the error says why it cannot be
// sent.
func (e *Exporter) open(ctx context.Context, req *sanbootv1.ExportRequest) (*os.File, store.Image, error) {
	if e.cfg.Images == nil {
		return nil, store.Image{}, errors.New("this agent's store keeps no bytes (the fake store): nothing to export")
	}
	f, im, err := e.cfg.Images.OpenImage(ctx, req.GetProject(), req.GetImage())
	if errors.Is(err, store.ErrNotFound) {
		return nil, store.Image{}, fmt.Errorf("%w: this agent does not hold it (any more): export again, from another replica", err)
	}
	return f, im, err
}
