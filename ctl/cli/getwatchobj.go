package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// watchSpec says how "get KIND -w" watches one kind other than nodes.
type watchSpec[T proto.Message] struct {
	kind    string // "images", "agents", "snapshots": messages and JSON key
	jsonKey string // key of the structured list: "images" or "agents"
	project string // for "No images found in project ..."; empty with -A or for agents
	// open starts one stream; recv then returns its events.
	open func(ctx context.Context) (func() (sanbootv1.NodeEvent_Type, T, error), error)
	key  func(T) string
	// keep selects what is printed (nil: all).
	keep  func(T) bool
	print func(p printer, items []T) error
}

// watchObjects is "get images|agents|snapshots -w", as watchNodes is for
// nodes: it prints the selection, then every object again each time it
// changes, until interrupted (exit 0). A broken stream is reopened with
// backoff; objects that did not change meanwhile are not printed again.
func watchObjects[T proto.Message](ctx context.Context, s *session, f listFlags, w watchSpec[T]) error {
	last := map[string]T{}
	header := true
	var widths []int
	backoff := 250 * time.Millisecond
	var breaks reconnects
	for {
		synced := false
		err := watchObjectsOnce(ctx, s, f, w, last, &header, &widths, &synced)
		if ctx.Err() != nil {
			return nil
		}
		if !retryable(err) {
			return s.rpcError(err)
		}
		breaks.note(s.env.Stderr, synced, err, backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func watchObjectsOnce[T proto.Message](ctx context.Context, s *session, f listFlags, w watchSpec[T], last map[string]T, header *bool, widths *[]int, synced *bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recv, err := w.open(ctx)
	if err != nil {
		return err
	}
	var initial []T
	for {
		typ, obj, err := recv()
		if err != nil {
			if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return ctx.Err()
			}
			return err
		}
		if typ == sanbootv1.NodeEvent_TYPE_SYNCED {
			*synced = true
			if len(initial) == 0 && *header && s.noneFound(f, w.kind, w.project) {
				continue
			}
			if len(initial) > 0 {
				if err := printWatchedObjects(s, f, w, initial, header, widths); err != nil {
					return err
				}
			}
			continue
		}
		if w.keep != nil && !w.keep(obj) {
			continue
		}
		k := w.key(obj)
		prev, seen := last[k]
		switch typ {
		case sanbootv1.NodeEvent_TYPE_INITIAL:
			if !seen || !proto.Equal(prev, obj) {
				initial = append(initial, obj)
			}
			last[k] = obj
			continue
		case sanbootv1.NodeEvent_TYPE_DELETED:
			delete(last, k)
		default:
			last[k] = obj
		}
		if *synced {
			if err := printWatchedObjects(s, f, w, []T{obj}, header, widths); err != nil {
				return err
			}
		}
	}
}

func printWatchedObjects[T proto.Message](s *session, f listFlags, w watchSpec[T], items []T, header *bool, widths *[]int) error {
	p := s.printer(f, true)
	p.widths = widths
	if p.structured() {
		for _, o := range items {
			if f.output == formatYAML && !*header {
				fmt.Fprintln(s.env.Stdout, "---")
			}
			*header = false
			if err := p.structuredOut(w.jsonKey, protoList([]T{o})); err != nil {
				return err
			}
		}
		return nil
	}
	p.noHeader = !*header
	*header = false
	return w.print(p, items)
}

// imageWatch is the watchSpec of images (snapshots only when snapshots).
func (s *session) imageWatch(names []string, f listFlags, snapshots bool) (watchSpec[*sanbootv1.Image], error) {
	c, err := s.api()
	if err != nil {
		return watchSpec[*sanbootv1.Image]{}, err
	}
	project, err := s.project()
	if err != nil {
		return watchSpec[*sanbootv1.Image]{}, err
	}
	req := &sanbootv1.WatchImagesRequest{Project: project, AllProjects: f.allProjects, LabelSelector: f.selector, Names: names}
	w := watchSpec[*sanbootv1.Image]{
		kind: "images", jsonKey: "images", project: project,
		open: func(ctx context.Context) (func() (sanbootv1.NodeEvent_Type, *sanbootv1.Image, error), error) {
			stream, err := c.WatchImages(ctx, req)
			if err != nil {
				return nil, err
			}
			return func() (sanbootv1.NodeEvent_Type, *sanbootv1.Image, error) {
				ev, err := stream.Recv()
				return ev.GetType(), ev.GetImage(), err
			}, nil
		},
		key: func(im *sanbootv1.Image) string {
			return im.GetMetadata().GetProject() + "/" + im.GetMetadata().GetName()
		},
		print: func(p printer, items []*sanbootv1.Image) error { return p.images(items) },
	}
	if f.allProjects {
		w.project = ""
	}
	if snapshots {
		w.kind = "snapshots"
		w.keep = api.IsSnapshot
		w.print = func(p printer, items []*sanbootv1.Image) error { return p.snapshots(items) }
	}
	return w, nil
}

func (s *session) watchImages(ctx context.Context, names []string, f listFlags, snapshots bool) error {
	w, err := s.imageWatch(names, f, snapshots)
	if err != nil {
		return err
	}
	return watchObjects(ctx, s, f, w)
}

func (s *session) watchAgents(ctx context.Context, names []string, f listFlags) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	only := map[string]bool{}
	for _, n := range names {
		only[n] = true
	}
	return watchObjects(ctx, s, f, watchSpec[*sanbootv1.Agent]{
		kind: "agents", jsonKey: "agents",
		open: func(ctx context.Context) (func() (sanbootv1.NodeEvent_Type, *sanbootv1.Agent, error), error) {
			stream, err := c.WatchAgents(ctx, &sanbootv1.ListAgentsRequest{})
			if err != nil {
				return nil, err
			}
			return func() (sanbootv1.NodeEvent_Type, *sanbootv1.Agent, error) {
				ev, err := stream.Recv()
				return ev.GetType(), ev.GetAgent(), err
			}, nil
		},
		key:   func(a *sanbootv1.Agent) string { return a.GetRecord().GetName() },
		keep:  func(a *sanbootv1.Agent) bool { return len(only) == 0 || only[a.GetRecord().GetName()] },
		print: func(p printer, items []*sanbootv1.Agent) error { return p.agents(items) },
	})
}
