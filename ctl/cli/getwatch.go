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
)

// watchNodes is "get nodes -w": it prints the selected nodes (a table with
// its header, or one document per node), then every node again each time
// it changes, from the API's WatchNodes stream, until interrupted (exit 0).
// A broken stream is reopened with backoff; nodes that did not change
// meanwhile are not printed again.
func (s *session) watchNodes(ctx context.Context, names []string, f listFlags) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	project, err := s.project()
	if err != nil {
		return err
	}
	req := &sanbootv1.WatchNodesRequest{Project: project, AllProjects: f.allProjects, LabelSelector: f.selector, Names: names}
	last := map[string]*sanbootv1.Node{}
	header := true
	var widths []int
	backoff := 250 * time.Millisecond
	var breaks reconnects
	for {
		synced := false
		err := s.watchNodesOnce(ctx, c, req, f, last, &header, &widths, &synced)
		if ctx.Err() != nil {
			return nil // interrupted: the normal end of a watch
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

func (s *session) watchNodesOnce(ctx context.Context, c sanbootv1.SanbootClient, req *sanbootv1.WatchNodesRequest, f listFlags, last map[string]*sanbootv1.Node, header *bool, widths *[]int, synced *bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.WatchNodes(ctx, req)
	if err != nil {
		return err
	}
	var initial []*sanbootv1.Node
	for {
		ev, err := stream.Recv()
		if err != nil {
			if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return ctx.Err()
			}
			return err
		}
		n := ev.GetNode()
		k := n.GetMetadata().GetProject() + "/" + n.GetMetadata().GetName()
		switch ev.GetType() {
		case sanbootv1.NodeEvent_TYPE_INITIAL:
			if !proto.Equal(last[k], n) {
				initial = append(initial, n)
			}
			last[k] = n
			continue
		case sanbootv1.NodeEvent_TYPE_SYNCED:
			*synced = true
			if len(initial) == 0 && *header && s.noneFound(f, "nodes", req.GetProject()) {
				continue
			}
			if len(initial) > 0 {
				if err := s.printWatched(f, initial, header, widths); err != nil {
					return err
				}
			}
			continue
		case sanbootv1.NodeEvent_TYPE_DELETED:
			delete(last, k)
		default:
			last[k] = n
		}
		if *synced {
			if err := s.printWatched(f, []*sanbootv1.Node{n}, header, widths); err != nil {
				return err
			}
		}
	}
}

// printWatched prints nodes: tables get their header only the first time;
// JSON and YAML print each node as a document of its own.
func (s *session) printWatched(f listFlags, nodes []*sanbootv1.Node, header *bool, widths *[]int) error {
	p := s.printer(f, true)
	p.widths = widths
	if p.structured() {
		for _, n := range nodes {
			if f.output == formatYAML && !*header {
				fmt.Fprintln(s.env.Stdout, "---")
			}
			*header = false
			if err := p.structuredOut("nodes", protoList([]*sanbootv1.Node{n})); err != nil {
				return err
			}
		}
		return nil
	}
	p.noHeader = !*header
	*header = false
	return p.nodes(nodes)
}
