// Package state mirrors sanboot's etcd records in memory, decoded and
// indexed, for the control plane's readers: the scheduler and the API
// server's cache. A Store is fed the batches of kv.Reflect over api.Prefix
// (or batches built from a range read) and reports what changed.
//
// A Store is not safe for concurrent use; its owner locks around it.
package state

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
)

// Kind is a kind of record under api.Prefix.
type Kind int

// The kinds a Store can keep.
const (
	Images Kind = iota
	Replicas
	Nodes
	Placements
	Assign
	NodeStatus
	Agents
	Alive
	Members
	Secrets
	MACs
	numKinds
)

var kindNames = [...]string{"images", "imagereplicas", "nodes", "placements", "assign", "nodestatus", "agents", "alive", "members", "secrets", "macs"}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Ref names a node or an image: project and name.
type Ref struct{ Project, Name string }

func (r Ref) String() string { return r.Project + "/" + r.Name }

// Record is a decoded value and the etcd mod_revision it was written at.
type Record[T proto.Message] struct {
	Msg         T
	ModRevision int64
}

// Encoded is a record as etcd holds it and the mod_revision it was
// written at; the store checked that it decodes.
type Encoded struct {
	Value       []byte
	ModRevision int64
}

// Assignment decodes an assignment record; nil for the zero Encoded.
func (e Encoded) Assignment() (*sanbootv1.Assignment, error) {
	if e.Value == nil {
		return nil, nil
	}
	a := &sanbootv1.Assignment{}
	if err := proto.Unmarshal(e.Value, a); err != nil {
		return nil, fmt.Errorf("decode assignment: %w", err)
	}
	return a, nil
}

// Change says that a record of Kind changed (or went away).
type Change struct {
	Kind    Kind
	Deleted bool
	// Ref is the node (nodes, placements, nodestatus, assign) or image
	// (images, replicas) the record belongs to.
	Ref Ref
	// Agent is the agent of an assign, replica, nodestatus, agents or alive record,
	// the member of a members record, or the MAC of a macs record.
	Agent string
}

// Store holds the records of the kinds it was created for.
type Store struct {
	log   *slog.Logger
	kinds [numKinds]bool

	// Revision is the etcd revision the store is consistent with.
	Revision int64

	Nodes      map[Ref]Record[*sanbootv1.Node]
	Placements map[Ref]Record[*sanbootv1.Placement]
	// Status is node -> agent -> the status that agent reports. Only the
	// placed agent's counts (StatusOf); others are strays the scheduler
	// deletes (a node that moved to another agent).
	Status map[Ref]map[string]Record[*sanbootv1.NodeStatus]
	// Assign is node -> agent -> assignment. A node has one assignment
	// unless something went wrong; the scheduler cleans up strays. They
	// are kept encoded (Encoded.Assignment decodes one): only the
	// scheduler reads them, one at a time, and with 10,000 nodes decoded
	// copies cost several times the memory.
	Assign   map[Ref]map[string]Encoded
	Images   map[Ref]Record[*sanbootv1.Image]
	Replicas map[Ref]map[string]Record[*sanbootv1.ImageReplica]
	Agents   map[string]Record[*sanbootv1.AgentRecord]
	// Alive is agent -> mod_revision of its alive key.
	Alive   map[string]int64
	Members map[string]Record[*sanbootv1.Member]
	// Secrets are nodes' CHAP credentials: keep them only where needed
	// (the scheduler), never in what the API serves.
	Secrets map[Ref]Record[*sanbootv1.ChapSecret]
	// MACs is the MAC index: a normalized MAC -> the node that owns it
	// (project, name, uid).
	MACs map[string]Record[*sanbootv1.ObjectMeta]

	assignCount map[string]int
}

// New returns an empty store that keeps records of the given kinds and
// ignores every other key.
func New(log *slog.Logger, kinds ...Kind) *Store {
	s := &Store{
		log:         log,
		Nodes:       map[Ref]Record[*sanbootv1.Node]{},
		Placements:  map[Ref]Record[*sanbootv1.Placement]{},
		Status:      map[Ref]map[string]Record[*sanbootv1.NodeStatus]{},
		Assign:      map[Ref]map[string]Encoded{},
		Images:      map[Ref]Record[*sanbootv1.Image]{},
		Replicas:    map[Ref]map[string]Record[*sanbootv1.ImageReplica]{},
		Agents:      map[string]Record[*sanbootv1.AgentRecord]{},
		Alive:       map[string]int64{},
		Members:     map[string]Record[*sanbootv1.Member]{},
		Secrets:     map[Ref]Record[*sanbootv1.ChapSecret]{},
		MACs:        map[string]Record[*sanbootv1.ObjectMeta]{},
		assignCount: map[string]int{},
	}
	for _, k := range kinds {
		s.kinds[k] = true
	}
	return s
}

// AssignCount is the number of assignments agent has.
func (s *Store) AssignCount(agent string) int { return s.assignCount[agent] }

// IsAlive reports whether agent's alive key exists.
func (s *Store) IsAlive(agent string) bool {
	_, ok := s.Alive[agent]
	return ok
}

// Apply applies a batch and returns what changed, in order. Keys it cannot
// parse or decode are logged and skipped (treated as absent).
func (s *Store) Apply(b kv.Batch) []Change {
	changes := make([]Change, 0, len(b.Events))
	for _, ev := range b.Events {
		c, ok := s.apply(ev)
		if ok {
			changes = append(changes, c)
		}
	}
	s.Revision = max(s.Revision, b.Revision)
	return changes
}

// BatchFromKVs turns the key-values of range reads made at revision rev
// into a batch for Apply, so that a one-off read and the watch-fed cache
// share one decoder.
func BatchFromKVs(rev int64, kvss ...[]*mvccpb.KeyValue) kv.Batch {
	b := kv.Batch{Resync: true, Revision: rev}
	for _, kvs := range kvss {
		for _, e := range kvs {
			b.Events = append(b.Events, kv.Event{Key: string(e.Key), Value: e.Value, ModRevision: e.ModRevision})
		}
	}
	return b
}

func (s *Store) apply(ev kv.Event) (Change, bool) {
	rest, ok := strings.CutPrefix(ev.Key, api.Prefix)
	if !ok {
		return Change{}, false
	}
	kindName, _, _ := strings.Cut(rest, "/")
	kind := Kind(-1)
	for i, n := range kindNames {
		if n == kindName {
			kind = Kind(i)
		}
	}
	if kind < 0 || !s.kinds[kind] {
		return Change{}, false
	}
	c, err := s.applyKind(kind, ev)
	c.Kind, c.Deleted = kind, ev.Deleted
	if err != nil {
		s.log.Warn("ignoring a record sanboot cannot read; fix or delete the key", "key", ev.Key, "err", err)
		if c.Ref == (Ref{}) && c.Agent == "" {
			return Change{}, false // not even its key parses: nothing to report
		}
		c.Deleted = true // the store dropped what it held for this key
	}
	return c, true
}

func (s *Store) applyKind(kind Kind, ev kv.Event) (Change, error) {
	switch kind {
	case Nodes, Placements, Images, Secrets:
		p, n, err := api.ProjectName(ev.Key)
		if err != nil {
			return Change{}, err
		}
		ref := Ref{p, n}
		switch kind {
		case Nodes:
			return Change{Ref: ref}, put(s.Nodes, ref, ev)
		case Placements:
			return Change{Ref: ref}, put(s.Placements, ref, ev)
		case Secrets:
			return Change{Ref: ref}, put(s.Secrets, ref, ev)
		default:
			return Change{Ref: ref}, put(s.Images, ref, ev)
		}
	case Assign:
		agent, p, n, err := api.ParseAssignKey(ev.Key)
		if err != nil {
			return Change{}, err
		}
		ref := Ref{p, n}
		m := s.Assign[ref]
		if m == nil {
			m = map[string]Encoded{}
		}
		_, had := m[agent]
		err = putEncoded[sanbootv1.Assignment](m, agent, ev)
		_, has := m[agent]
		switch {
		case had && !has:
			s.assignCount[agent]--
		case !had && has:
			s.assignCount[agent]++
		}
		setOrDrop(s.Assign, ref, m)
		return Change{Ref: ref, Agent: agent}, err
	case NodeStatus:
		p, n, agent, err := api.ParseNodeStatusKey(ev.Key)
		if err != nil {
			return Change{}, err
		}
		ref := Ref{p, n}
		m := s.Status[ref]
		if m == nil {
			m = map[string]Record[*sanbootv1.NodeStatus]{}
		}
		err = put(m, agent, ev)
		setOrDrop(s.Status, ref, m)
		return Change{Ref: ref, Agent: agent}, err
	case Replicas:
		p, img, agent, err := api.ParseReplicaKey(ev.Key)
		if err != nil {
			return Change{}, err
		}
		ref := Ref{p, img}
		m := s.Replicas[ref]
		if m == nil {
			m = map[string]Record[*sanbootv1.ImageReplica]{}
		}
		err = put(m, agent, ev)
		setOrDrop(s.Replicas, ref, m)
		return Change{Ref: ref, Agent: agent}, err
	case Agents, Alive, Members:
		name := api.LastSegment(ev.Key)
		if err := api.ValidateName("name", name); err != nil {
			return Change{}, err
		}
		switch kind {
		case Agents:
			return Change{Agent: name}, put(s.Agents, name, ev)
		case Members:
			return Change{Agent: name}, put(s.Members, name, ev)
		default:
			if ev.Deleted {
				delete(s.Alive, name)
			} else {
				s.Alive[name] = ev.ModRevision
			}
			return Change{Agent: name}, nil
		}
	case MACs:
		mac := api.LastSegment(ev.Key)
		// The change names the owner, before or after.
		c := Change{Agent: mac}
		if old, ok := s.MACs[mac]; ok {
			c.Ref = Ref{old.Msg.GetProject(), old.Msg.GetName()}
		}
		err := put(s.MACs, mac, ev)
		if cur, ok := s.MACs[mac]; ok {
			c.Ref = Ref{cur.Msg.GetProject(), cur.Msg.GetName()}
		}
		return c, err
	}
	return Change{}, fmt.Errorf("unknown kind %v", kind)
}

// StatusOf is the status node ref's placed agent reports, if the store
// keeps Placements and NodeStatus and there is one.
func (s *Store) StatusOf(ref Ref) (Record[*sanbootv1.NodeStatus], bool) {
	agent := s.Placements[ref].Msg.GetAgent()
	if agent == "" {
		return Record[*sanbootv1.NodeStatus]{}, false
	}
	r, ok := s.Status[ref][agent]
	return r, ok
}

// MACOwner is the node the MAC index gives mac to, if the store keeps
// MACs and the index has mac.
func (s *Store) MACOwner(mac string) (Ref, bool) {
	r, ok := s.MACs[mac]
	if !ok {
		return Ref{}, false
	}
	return Ref{r.Msg.GetProject(), r.Msg.GetName()}, true
}

// put decodes ev into m[k], or deletes m[k]. A value that does not decode
// removes what was there, so that the store never holds a stale record.
func put[K comparable, T any, PT interface {
	*T
	proto.Message
}](m map[K]Record[PT], k K, ev kv.Event) error {
	if ev.Deleted {
		delete(m, k)
		return nil
	}
	msg := PT(new(T))
	if err := proto.Unmarshal(ev.Value, msg); err != nil {
		delete(m, k)
		return fmt.Errorf("decode: %w", err)
	}
	m[k] = Record[PT]{Msg: msg, ModRevision: ev.ModRevision}
	return nil
}

// putEncoded is put for a record kept encoded: it checks that ev's value
// decodes as a T, and keeps a copy of the bytes (the event's own belong to
// a whole watch response).
func putEncoded[T any, PT interface {
	*T
	proto.Message
}](m map[string]Encoded, k string, ev kv.Event) error {
	if ev.Deleted {
		delete(m, k)
		return nil
	}
	if err := proto.Unmarshal(ev.Value, PT(new(T))); err != nil {
		delete(m, k)
		return fmt.Errorf("decode: %w", err)
	}
	m[k] = Encoded{Value: bytes.Clone(ev.Value), ModRevision: ev.ModRevision}
	return nil
}

func setOrDrop[K comparable, V any](m map[Ref]map[K]V, ref Ref, inner map[K]V) {
	if len(inner) == 0 {
		delete(m, ref)
		return
	}
	m[ref] = inner
}
