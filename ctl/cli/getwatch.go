package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/printers"
)

// watchObjects is "get KIND -w": it prints the selection (a table with its
// header, or one document per object), then every object again each time
// it changes, from the API's watch stream, until interrupted (exit 0). A
// broken stream is reopened with backoff; objects that did not change
// meanwhile are not printed again.
func watchObjects[T proto.Message](ctx context.Context, s *session, f listFlags, k kind[T], names []string) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	q := watchQuery{allProjects: f.allProjects, selector: f.selector, names: names}
	if k.projects {
		if q.project, err = s.project(); err != nil {
			return err
		}
	}
	w := watcher[T]{kind: k, open: func(ctx context.Context) (func() (sanbootv1.NodeEvent_Type, T, error), error) {
		return k.watch(ctx, c, q)
	}}
	if !f.allProjects {
		w.project = q.project // for "No nodes found in project ..."
	}
	if k.byName && len(names) > 0 {
		w.names = map[string]bool{}
		for _, n := range names {
			w.names[n] = true
		}
	}
	last := map[string]T{}
	header := true
	var widths []int
	backoff := 250 * time.Millisecond
	var breaks reconnects
	for {
		synced := false
		err := w.once(ctx, s, f, last, &header, &widths, &synced)
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

// watcher is one watch of a kind.
type watcher[T proto.Message] struct {
	kind    kind[T]
	open    func(ctx context.Context) (func() (sanbootv1.NodeEvent_Type, T, error), error)
	project string          // for "No KIND found in project ..."; empty with -A
	names   map[string]bool // the keys to keep (kind.byName), nil: all
}

// kept says whether obj is printed.
func (w watcher[T]) kept(obj T) bool {
	return (w.kind.keep == nil || w.kind.keep(obj)) && (w.names == nil || w.names[w.kind.key(obj)])
}

// once runs one stream until it breaks or ctx ends; synced says whether
// it got as far as its initial state.
func (w watcher[T]) once(ctx context.Context, s *session, f listFlags, last map[string]T, header *bool, widths *[]int, synced *bool) error {
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
			if len(initial) == 0 && *header && s.noneFound(f, w.kind.plural, w.project) {
				continue
			}
			if len(initial) > 0 {
				if err := printWatched(s, f, w.kind, initial, header, widths); err != nil {
					return err
				}
			}
			continue
		}
		if !w.kept(obj) {
			continue
		}
		k := w.kind.key(obj)
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
			if err := printWatched(s, f, w.kind, []T{obj}, header, widths); err != nil {
				return err
			}
		}
	}
}

// printWatched prints items: tables get their header only the first time;
// JSON and YAML print each object as a document of its own.
func printWatched[T proto.Message](s *session, f listFlags, k kind[T], items []T, header *bool, widths *[]int) error {
	p := s.printer(f, true)
	p.Widths = widths
	if p.Structured() {
		for _, o := range items {
			if f.output == printers.FormatYAML && !*header {
				fmt.Fprintln(s.env.Stdout, "---")
			}
			*header = false
			if err := p.StructuredOut(k.jsonKey, printers.ProtoList([]T{o})); err != nil {
				return err
			}
		}
		return nil
	}
	p.NoHeader = !*header
	*header = false
	return k.print(p, items)
}
