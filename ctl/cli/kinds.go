package cli

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// kind is how get, get -w and ls reach one kind of object. The generic
// get (get.go) and watch (getwatch.go) read it, so that every kind lists,
// pages, prints and watches the same way.
type kind[T proto.Message] struct {
	plural   string // "nodes": in messages ("No nodes found") and -w's help
	jsonKey  string // key of the structured list: {"nodes": [...]}
	projects bool   // objects live in projects: -A, -l and "in project"
	get      func(ctx context.Context, c sanbootv1.SanbootClient, project, name string) (T, error)
	list     func(ctx context.Context, c sanbootv1.SanbootClient, req *sanbootv1.ListRequest) ([]T, error)
	// watch opens one stream; the function it returns receives its events.
	watch func(ctx context.Context, c sanbootv1.SanbootClient, q watchQuery) (func() (sanbootv1.NodeEvent_Type, T, error), error)
	// key names an object among those watched; byName: the watch request
	// cannot select names, so the watch keeps those whose key is named.
	key    func(T) string
	byName bool
	// keep selects what is printed (nil: all); notKept is the error of a
	// named object that keep refuses.
	keep    func(T) bool
	notKept func(T) error
	print   func(p printer, items []T) error
}

// watchQuery is what get -w selects.
type watchQuery struct {
	project     string
	allProjects bool
	selector    string
	names       []string
}

func refKey(m *sanbootv1.ObjectMeta) string { return m.GetProject() + "/" + m.GetName() }

func nodeKind() kind[*sanbootv1.Node] {
	return kind[*sanbootv1.Node]{
		plural: "nodes", jsonKey: "nodes", projects: true,
		get: func(ctx context.Context, c sanbootv1.SanbootClient, project, name string) (*sanbootv1.Node, error) {
			return c.GetNode(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		},
		list: func(ctx context.Context, c sanbootv1.SanbootClient, req *sanbootv1.ListRequest) ([]*sanbootv1.Node, error) {
			resp, err := listNodes(ctx, c, req)
			return resp.GetNodes(), err
		},
		watch: func(ctx context.Context, c sanbootv1.SanbootClient, q watchQuery) (func() (sanbootv1.NodeEvent_Type, *sanbootv1.Node, error), error) {
			stream, err := c.WatchNodes(ctx, &sanbootv1.WatchNodesRequest{Project: q.project, AllProjects: q.allProjects, LabelSelector: q.selector, Names: q.names})
			if err != nil {
				return nil, err
			}
			return func() (sanbootv1.NodeEvent_Type, *sanbootv1.Node, error) {
				ev, err := stream.Recv()
				return ev.GetType(), ev.GetNode(), err
			}, nil
		},
		key:   func(n *sanbootv1.Node) string { return refKey(n.GetMetadata()) },
		print: func(p printer, items []*sanbootv1.Node) error { return p.Nodes(items) },
	}
}

func imageKind() kind[*sanbootv1.Image] {
	return kind[*sanbootv1.Image]{
		plural: "images", jsonKey: "images", projects: true,
		get: func(ctx context.Context, c sanbootv1.SanbootClient, project, name string) (*sanbootv1.Image, error) {
			return c.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		},
		list: func(ctx context.Context, c sanbootv1.SanbootClient, req *sanbootv1.ListRequest) ([]*sanbootv1.Image, error) {
			resp, err := listImages(ctx, c, req)
			return resp.GetImages(), err
		},
		watch: func(ctx context.Context, c sanbootv1.SanbootClient, q watchQuery) (func() (sanbootv1.NodeEvent_Type, *sanbootv1.Image, error), error) {
			stream, err := c.WatchImages(ctx, &sanbootv1.WatchImagesRequest{Project: q.project, AllProjects: q.allProjects, LabelSelector: q.selector, Names: q.names})
			if err != nil {
				return nil, err
			}
			return func() (sanbootv1.NodeEvent_Type, *sanbootv1.Image, error) {
				ev, err := stream.Recv()
				return ev.GetType(), ev.GetImage(), err
			}, nil
		},
		key:   func(im *sanbootv1.Image) string { return refKey(im.GetMetadata()) },
		print: func(p printer, items []*sanbootv1.Image) error { return p.Images(items) },
	}
}

// snapshotKind is the images made from snapshots.
func snapshotKind() kind[*sanbootv1.Image] {
	k := imageKind()
	k.plural = "snapshots"
	k.keep, k.notKept = api.IsSnapshot, notSnapshot
	k.print = func(p printer, items []*sanbootv1.Image) error { return p.Snapshots(items) }
	return k
}

func agentKind() kind[*sanbootv1.Agent] {
	return kind[*sanbootv1.Agent]{
		plural: "agents", jsonKey: "agents",
		get: func(ctx context.Context, c sanbootv1.SanbootClient, _, name string) (*sanbootv1.Agent, error) {
			return c.GetAgent(ctx, &sanbootv1.GetAgentRequest{Name: name})
		},
		list: func(ctx context.Context, c sanbootv1.SanbootClient, _ *sanbootv1.ListRequest) ([]*sanbootv1.Agent, error) {
			resp, err := c.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
			return resp.GetAgents(), err
		},
		watch: func(ctx context.Context, c sanbootv1.SanbootClient, _ watchQuery) (func() (sanbootv1.NodeEvent_Type, *sanbootv1.Agent, error), error) {
			stream, err := c.WatchAgents(ctx, &sanbootv1.ListAgentsRequest{})
			if err != nil {
				return nil, err
			}
			return func() (sanbootv1.NodeEvent_Type, *sanbootv1.Agent, error) {
				ev, err := stream.Recv()
				return ev.GetType(), ev.GetAgent(), err
			}, nil
		},
		key:    func(a *sanbootv1.Agent) string { return a.GetRecord().GetName() },
		byName: true,
		print:  func(p printer, items []*sanbootv1.Agent) error { return p.Agents(items) },
	}
}
