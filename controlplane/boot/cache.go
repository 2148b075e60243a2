package boot

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
)

// cache indexes the member's informer (nodes, placements, node statuses,
// agent liveness, CHAP secrets, images for their EFI boot paths: what
// scripts are made of) by MAC address.
//
// Lock order: the informer's lock, then mu. The informer calls handle
// under its write lock.
type cache struct {
	inf *informer.Informer
	log *slog.Logger

	mu     sync.Mutex
	synced bool
	// byMAC maps a normalized MAC to the nodes whose spec lists it (more
	// than one is a mistake the script reports).
	byMAC map[string]map[state.Ref]bool
	// macsOf is what byMAC holds for each node, to update it.
	macsOf map[state.Ref][]string
}

func newCache(inf *informer.Informer, log *slog.Logger) *cache {
	return &cache{
		inf:    inf,
		log:    log,
		byMAC:  map[string]map[state.Ref]bool{},
		macsOf: map[state.Ref][]string{},
	}
}

// run follows the informer until ctx ends.
func (c *cache) run(ctx context.Context) {
	defer c.inf.AddHandler(c.handle)()
	<-ctx.Done()
}

func (c *cache) handle(u informer.Update) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u.Resync {
		for ref := range c.macsOf {
			c.index(u.Store, ref)
		}
		for ref := range u.Store.Nodes {
			c.index(u.Store, ref)
		}
	}
	for _, ch := range u.Changes {
		if ch.Kind == state.Nodes {
			c.index(u.Store, ch.Ref)
		}
	}
	c.synced = true
}

// index brings byMAC up to date for node ref. c.mu is held.
func (c *cache) index(st *state.Store, ref state.Ref) {
	for _, mac := range c.macsOf[ref] {
		delete(c.byMAC[mac], ref)
		if len(c.byMAC[mac]) == 0 {
			delete(c.byMAC, mac)
		}
	}
	delete(c.macsOf, ref)
	rec, ok := st.Nodes[ref]
	if !ok || rec.Msg.GetMetadata().GetDeleteTime() != nil {
		return // a deleting node boots no more; its MACs are free for another
	}
	var macs []string
	for _, m := range rec.Msg.GetSpec().GetMacs() {
		mac, err := api.NormalizeMAC("spec.macs", m)
		if err != nil {
			c.log.Warn("ignoring a MAC address the boot server cannot read", "node", ref, "err", err)
			continue
		}
		if c.byMAC[mac] == nil {
			c.byMAC[mac] = map[state.Ref]bool{}
		}
		c.byMAC[mac][ref] = true
		macs = append(macs, mac)
	}
	if len(macs) > 0 {
		c.macsOf[ref] = macs
	}
}

// ready reports whether the first list has arrived.
func (c *cache) ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// byMACAddr returns the nodes whose spec lists mac (normalized), sorted.
func (c *cache) byMACAddr(mac string) []state.Ref {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.SortedFunc(maps.Keys(c.byMAC[mac]), func(a, b state.Ref) int {
		return cmp.Or(strings.Compare(a.Project, b.Project), strings.Compare(a.Name, b.Name))
	})
}

// failover returns the agents node n could fail over to, with their
// portals (FailoverOf).
func (c *cache) failover(n *sanbootv1.Node) []Failover {
	st := c.inf.RLock()
	defer c.inf.RUnlock()
	return FailoverOf(st, n)
}

// node returns the view of node ref, copies of its image's record (nil
// when unknown) and of its CHAP secret (nil when it has none), or a nil
// node.
func (c *cache) node(ref state.Ref) (*sanbootv1.Node, *sanbootv1.Image, *sanbootv1.ChapSecret) {
	st := c.inf.RLock()
	defer c.inf.RUnlock()
	n := view.Node(st, ref)
	var image *sanbootv1.Image
	if rec, ok := st.Images[state.Ref{Project: ref.Project, Name: n.GetSpec().GetImage()}]; ok {
		image = proto.CloneOf(rec.Msg)
	}
	var secret *sanbootv1.ChapSecret
	if rec, ok := st.Secrets[ref]; ok {
		secret = proto.CloneOf(rec.Msg)
	}
	return n, image, secret
}
