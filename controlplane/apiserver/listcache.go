package apiserver

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/view"
)

// ListNodes answers from the watch cache: the member's informer holds
// every node decoded, so a list reads nothing from etcd but the current
// revision (for read-your-writes: the cache first catches up with what
// etcd held when the list was asked for, as a watch does), and its nodes
// share their spec and labels with the informer's records (gRPC encodes
// them straight from there). Reading every page from etcd and decoding it
// again cost ~90-114 MB of allocations per list of 10,000 nodes.
//
// A list is one revision, the cache's when its first page was asked for.
// The first page computes every node the list selects (metadata and spec,
// with their statuses unless spec_only: ~600 bytes a node, the records
// themselves shared) and, when more pages follow, keeps them as
// the list's snapshot until its last page is served or it is left unused
// for listSnapshotTTL; the next pages are cut from the snapshot. A page
// token whose snapshot this member no longer holds (it expired, newer
// lists pushed it out, or the token came from another member) is served from
// etcd at the token's revision instead (listNodesPage), as before.

// listSnapshotTTL is how long a list's snapshot waits for its next page.
const listSnapshotTTL = time.Minute

// maxListSnapshots is how many lists' snapshots a member keeps at once,
// and maxListSnapshotNodes how many nodes they hold together; the least
// recently used goes first. A node of a snapshot costs ~600 bytes, more
// with its status (its spec and labels are shared with the cache): 40,000
// of them, four lists of 10,000 nodes, are ~25–35 MB at most, however
// many lists clients open and leave.
const (
	maxListSnapshots     = 16
	maxListSnapshotNodes = 40_000
)

// listKey is what a list's snapshot is found by: its revision and the
// request's fields other than paging, which a next page repeats.
type listKey struct {
	rev      int64
	project  string
	all      bool
	selector string
	specOnly bool
}

type listSnapshot struct {
	nodes []*sanbootv1.Node
	used  time.Time
}

// listSnapshots are the snapshots of the lists whose next pages are to
// come.
type listSnapshots struct {
	mu    sync.Mutex
	lists map[listKey]*listSnapshot
	nodes int // in lists
}

// get returns the snapshot of key, or nil.
func (l *listSnapshots) get(key listKey, now time.Time) []*sanbootv1.Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(now)
	snap := l.lists[key]
	if snap == nil {
		return nil
	}
	snap.used = now
	return snap.nodes
}

// put keeps nodes as the snapshot of key, dropping the least recently
// used beyond maxListSnapshots and maxListSnapshotNodes. A list larger
// than maxListSnapshotNodes is not kept (its next pages are read from
// etcd).
func (l *listSnapshots) put(key listKey, nodes []*sanbootv1.Node, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(now)
	if len(nodes) > maxListSnapshotNodes {
		return
	}
	if l.lists == nil {
		l.lists = map[listKey]*listSnapshot{}
	}
	for len(l.lists) >= maxListSnapshots || l.nodes+len(nodes) > maxListSnapshotNodes {
		var oldest listKey
		var at time.Time
		for k, s := range l.lists {
			if at.IsZero() || s.used.Before(at) {
				oldest, at = k, s.used
			}
		}
		l.drop(oldest)
	}
	l.lists[key] = &listSnapshot{nodes: nodes, used: now}
	l.nodes += len(nodes)
}

// done drops the snapshot of key (its last page was served).
func (l *listSnapshots) done(key listKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drop(key)
}

func (l *listSnapshots) expire(now time.Time) {
	for k, s := range l.lists {
		if now.Sub(s.used) > listSnapshotTTL {
			l.drop(k)
		}
	}
}

func (l *listSnapshots) drop(key listKey) {
	if s, ok := l.lists[key]; ok {
		l.nodes -= len(s.nodes)
		delete(l.lists, key)
	}
}

// listNodesCached is ListNodes from the cache; ok false when a next page's
// snapshot is gone (the caller reads that page from etcd).
func (s *Server) listNodesCached(ctx context.Context, f view.NodeFilter, p pager, req *sanbootv1.ListRequest) (resp *sanbootv1.ListNodesResponse, ok bool, err error) {
	key := listKey{rev: p.rev, project: f.Project, all: f.AllProjects, selector: req.GetLabelSelector(), specOnly: req.GetSpecOnly()}
	var nodes []*sanbootv1.Node
	if p.after != "" {
		if project, _, _ := strings.Cut(p.after, "\x00"); !f.AllProjects && project != f.Project {
			return nil, false, status.Errorf(codes.InvalidArgument, "page_token: it continues a list of project %q, not %q: pass the same project as for the first page", project, f.Project)
		}
		if nodes = s.lists.get(key, time.Now()); nodes == nil {
			return nil, false, nil
		}
	} else {
		if err := s.cache.waitSynced(ctx); err != nil {
			return nil, false, err
		}
		if err := s.cache.catchUp(ctx, 0); err != nil {
			return nil, false, err
		}
		st := s.cache.inf.RLock()
		key.rev = st.Revision
		if key.specOnly {
			nodes = view.NodeRecords(st, f)
		} else {
			nodes = view.Nodes(st, f)
		}
		s.cache.inf.RUnlock()
	}
	items, next, err := page(p, nodes, func(n *sanbootv1.Node) string { return metaKey(n.GetMetadata()) }, key.rev, "nodes")
	if err != nil {
		return nil, false, err
	}
	switch {
	case next == "":
		s.lists.done(key)
	case p.after == "":
		s.lists.put(key, nodes, time.Now())
	}
	return &sanbootv1.ListNodesResponse{Nodes: items, Revision: key.rev, NextPageToken: next}, true, nil
}
