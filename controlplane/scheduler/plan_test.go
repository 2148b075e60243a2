package scheduler

// The scheduler's decisions, sample-controller style: each case fills the
// in-memory store with records, asks plan what one node needs, and
// compares the transaction it would write (comparisons and operations)
// with testdata/plan/<case>.txt. Run with -update to write those files
// again, then read the diff. The end-to-end tests (scheduler_test.go)
// check that these plans reach etcd.

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/placement"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/golden"
	"github.com/sanboot/sanboot/internal/kv"
)

const project, image = "default", "img"

// rec is one etcd record; a nil msg is an empty value (an alive key).
type rec struct {
	key string
	msg proto.Message
}

// node is a node record of generation 1 on image img.
func node(name string, change ...func(*sanbootv1.Node)) rec {
	n := &sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name, Generation: 1, Uid: "uid-" + name},
		Spec:     &sanbootv1.NodeSpec{Image: image},
	}
	for _, c := range change {
		c(n)
	}
	return rec{api.NodeKey(project, name), n}
}

func pinned(agent string) func(*sanbootv1.Node) {
	return func(n *sanbootv1.Node) { n.Spec.Agent = agent }
}

func deleted(n *sanbootv1.Node) { n.Metadata.DeleteTime = timestamppb.New(timestamppb.Now().AsTime()) }

func forced(n *sanbootv1.Node) { deleted(n); n.Metadata.ForceDelete = true }

// agent is a registered agent: its record, its alive key unless dead, and
// its replica of img in phase replica (none when "").
func agent(name, replica string) []rec { return domainAgent(name, replica, "", true) }

func domainAgent(name, replica, domain string, alive bool) []rec {
	out := []rec{{api.AgentKey(name), &sanbootv1.AgentRecord{Name: name, StorageDomain: domain}}}
	if alive {
		out = append(out, rec{api.AliveKey(name), nil})
	}
	if replica != "" {
		out = append(out, rec{api.ReplicaKey(project, image, name), &sanbootv1.ImageReplica{Phase: replica}})
	}
	return out
}

// placed is what the scheduler wrote for node n (as node built it) on
// agent a: a placement and an assignment.
func placed(n rec, a string) []rec {
	nd := n.msg.(*sanbootv1.Node)
	ref := state.Ref{Project: project, Name: nd.Metadata.Name}
	return []rec{
		{api.PlacementKey(project, ref.Name), &sanbootv1.Placement{Agent: a, Reason: api.ReasonScheduled, Generation: nd.Metadata.Generation}},
		{api.AssignKey(a, project, ref.Name), placement.Assignment(ref, nd, nil)},
	}
}

// tearDown is the assignment of node n (as node built it) once the
// scheduler asked its agent to tear it down.
func tearDown(n rec) *sanbootv1.Assignment {
	nd := n.msg.(*sanbootv1.Node)
	a := placement.Assignment(state.Ref{Project: project, Name: nd.Metadata.Name}, nd, nil)
	a.Deleting = true
	return a
}

func status(nodeName, agent, phase string) rec {
	return rec{api.NodeStatusKey(project, nodeName, agent), &sanbootv1.NodeStatus{Phase: phase, Agent: agent}}
}

// load gives agent a n assignments of other nodes.
func load(a string, n int) []rec {
	var out []rec
	for i := range n {
		name := fmt.Sprintf("other-%s-%d", a, i)
		out = append(out, rec{api.AssignKey(a, project, name), &sanbootv1.Assignment{Project: project, Node: name}})
	}
	return out
}

func records(groups ...any) []rec {
	var out []rec
	for _, g := range groups {
		switch g := g.(type) {
		case rec:
			out = append(out, g)
		case []rec:
			out = append(out, g...)
		default:
			panic(fmt.Sprintf("records: %T", g))
		}
	}
	return out
}

func TestPlan(t *testing.T) {
	n1 := node("n1")
	repinned := node("n1", pinned("b"), func(n *sanbootv1.Node) {
		n.Metadata.Generation = 2
		n.Spec.Macs = []string{"52:54:00:00:00:01"}
	})
	chap := node("n1", func(n *sanbootv1.Node) { n.Spec.Chap = true })
	secret := rec{api.SecretKey(project, "n1"), &sanbootv1.ChapSecret{User: "n1-user", Secret: "not-a-real-secret",
		MutualUser: "target-user", MutualSecret: "not-a-real-mutual-secret"}}
	const domain = "rbd:6f1c2a9e/sanboot"
	tests := []struct {
		name    string
		records []rec
		// picks are placements decided earlier in the same batch.
		picks map[string]int
	}{
		// Placing a new node.
		{name: "pinned agent", records: records(agent("a", "Ready"), agent("b", "Ready"), node("n1", pinned("b")))},
		{name: "only agent holding the image", records: records(agent("a", "Pending"), agent("b", "Ready"), agent("c", ""), n1)},
		{name: "no agent holds the image", records: records(agent("a", "Pending"), agent("b", "Failed"), n1)},
		{name: "no agent at all", records: records(n1)},
		{name: "no agent and the placement says so already", records: records(n1,
			rec{api.PlacementKey(project, "n1"), &sanbootv1.Placement{Reason: api.ReasonNoAgent, Message: `no Ready agent holds image "img"`, Generation: 1}})},
		{name: "pinned agent not registered", records: records(agent("a", "Ready"), node("n1", pinned("zz")))},
		{name: "pinned agent unavailable", records: records(domainAgent("a", "Ready", "", false), node("n1", pinned("a")))},
		{name: "pinned agent without the image", records: records(agent("a", "Ready"), agent("b", "Pending"), node("n1", pinned("b")))},
		{name: "least loaded", records: records(agent("a", "Ready"), agent("b", "Ready"), load("a", 3), load("b", 1), n1)},
		{name: "least loaded counts the picks of the batch", records: records(agent("a", "Ready"), agent("b", "Ready"), load("a", 1), n1),
			picks: map[string]int{"b": 2}},
		{name: "ties go by name", records: records(agent("b", "Ready"), agent("a", "Ready"), n1)},
		{name: "dead agent is not chosen", records: records(domainAgent("a", "Ready", "", false), agent("b", "Ready"), load("b", 5), n1)},
		{name: "chap credentials in the assignment", records: records(agent("a", "Ready"), chap, secret)},
		{name: "mutual chap credentials in the assignment", records: records(agent("a", "Ready"), secret,
			node("n1", func(n *sanbootv1.Node) { n.Spec.Chap, n.Spec.MutualChap = true, true }))},

		// A placed node.
		{name: "placed and up to date", records: records(agent("a", "Ready"), n1, placed(n1, "a"), status("n1", "a", api.PhaseReady))},
		{name: "placement is sticky and follows the spec", records: records(agent("a", "Ready"), agent("b", "Ready"), repinned, placed(n1, "a"))},
		{name: "placed on a dead agent without a domain waits", records: records(domainAgent("a", "Ready", "", false), agent("b", "Ready"), n1, placed(n1, "a"))},
		{name: "status of another agent goes", records: records(agent("a", "Ready"), n1, placed(n1, "a"), status("n1", "a", api.PhaseReady), status("n1", "b", api.PhaseReady))},
		{name: "assignment to another agent goes", records: records(agent("a", "Ready"), n1, placed(n1, "a"),
			rec{api.AssignKey("b", project, "n1"), placement.Assignment(state.Ref{Project: project, Name: "n1"}, n1.msg.(*sanbootv1.Node), nil)})},
		{name: "failover within the storage domain", records: records(domainAgent("a", "Ready", domain, false), domainAgent("b", "Ready", domain, true),
			domainAgent("c", "Ready", "rbd:6f1c2a9e/other", true), n1, placed(n1, "a"))},
		{name: "no failover when no agent of the domain holds the image", records: records(domainAgent("a", "", domain, false),
			domainAgent("b", "", domain, true), agent("c", "Ready"), n1, placed(n1, "a"))},

		// Deleting a node.
		{name: "deletion asks the agent to tear down", records: records(agent("a", "Ready"), node("n1", deleted), placed(n1, "a"), status("n1", "a", api.PhaseReady))},
		{name: "deletion waits for the agent", records: records(agent("a", "Ready"), node("n1", deleted), placed(n1, "a")[0],
			rec{api.AssignKey("a", project, "n1"), tearDown(n1)}, status("n1", "a", api.PhaseDeleting))},
		{name: "deletion once the agent tore down", records: records(agent("a", "Ready"), node("n1", deleted), placed(n1, "a"),
			status("n1", "a", api.PhaseDeleted), status("n1", "b", api.PhaseReady), secret)},
		{name: "deleting a node never placed", records: records(node("n1", deleted),
			rec{api.PlacementKey(project, "n1"), &sanbootv1.Placement{Reason: api.ReasonNoAgent, Message: `no Ready agent holds image "img"`, Generation: 1}})},
		{name: "deleting a node whose assignment is gone", records: records(agent("a", "Ready"), node("n1", deleted), placed(n1, "a")[0])},
		{name: "forced deletion waits for a live agent", records: records(agent("a", "Ready"), node("n1", forced), placed(n1, "a"))},
		{name: "forced deletion of a node whose agent is gone", records: records(domainAgent("a", "Ready", "", false), node("n1", forced), placed(n1, "a"))},
		{name: "records of a node that no longer exists", records: records(agent("a", "Ready"), placed(n1, "a"), status("n1", "a", api.PhaseReady))},
		{name: "nothing at all", records: records(agent("a", "Ready"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(nil, Config{Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
			b := kv.Batch{Resync: true}
			for i, r := range tt.records {
				var v []byte
				if r.msg != nil {
					var err error
					if v, err = proto.Marshal(r.msg); err != nil {
						t.Fatal(err)
					}
				}
				b.Events = append(b.Events, kv.Event{Key: r.key, Value: v, ModRevision: int64(i + 1)})
				b.Revision = int64(i + 1)
			}
			s.store.Apply(b)
			picks := tt.picks
			if picks == nil {
				picks = map[string]int{}
			}
			p, err := s.plan(state.Ref{Project: project, Name: "n1"}, picks)
			if err != nil {
				t.Fatal(err)
			}
			got := describe(t, p, tt.records)
			golden.Check(t, filepath.Join("plan", strings.ReplaceAll(tt.name, " ", "_")+".txt"), got)
		})
	}
}

// describe writes a plan as text: what it is for, the comparisons (a key
// unchanged since the record the store holds, or absent) and the
// operations, keys without api.Prefix and values field by field.
func describe(t *testing.T, p *plan, records []rec) string {
	if p == nil {
		return "nothing to do\n"
	}
	revKey := map[int64]string{}
	for i, r := range records {
		revKey[int64(i+1)] = r.key
	}
	var b strings.Builder
	fmt.Fprintf(&b, "what: %s\nagent: %s\n", p.what, p.agent)
	var cmps []string
	for _, c := range p.cmps {
		key := string(c.Key)
		rev := c.TargetUnion.(*pb.Compare_ModRevision).ModRevision
		switch {
		case c.Target != pb.Compare_MOD || c.Result != pb.Compare_EQUAL:
			t.Errorf("comparison %v is not mod_revision =", c)
		case rev == 0:
			cmps = append(cmps, "absent "+short(key))
		case revKey[rev] != key:
			t.Errorf("comparison of %s at revision %d, which is the record of %s", key, rev, revKey[rev])
		default:
			cmps = append(cmps, "unchanged "+short(key))
		}
	}
	slices.Sort(cmps)
	var ops []string
	for _, op := range p.ops {
		key := string(op.KeyBytes())
		switch {
		case op.IsDelete():
			ops = append(ops, "delete "+short(key))
		case op.IsPut():
			var msg proto.Message
			switch {
			case strings.HasPrefix(key, api.PlacementsPrefix("")):
				msg = &sanbootv1.Placement{}
			case strings.HasPrefix(key, api.AssignPrefix("")):
				msg = &sanbootv1.Assignment{}
			default:
				t.Fatalf("plan puts %s, which the scheduler never writes", key)
			}
			if err := proto.Unmarshal(op.ValueBytes(), msg); err != nil {
				t.Fatal(err)
			}
			ops = append(ops, "put "+short(key)+" "+text(msg.ProtoReflect()))
		default:
			t.Errorf("operation on %s is neither a put nor a delete", key)
		}
	}
	slices.Sort(ops)
	for _, c := range cmps {
		fmt.Fprintf(&b, "if %s\n", c)
	}
	for _, o := range ops {
		fmt.Fprintf(&b, "%s\n", o)
	}
	return b.String()
}

func short(key string) string { return strings.TrimPrefix(key, api.Prefix) }

// text writes the fields a message has set in field-number order. It is
// stable, unlike prototext, whose spacing varies on purpose.
func text(m protoreflect.Message) string {
	var parts []string
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if m.Has(fd) {
			parts = append(parts, string(fd.Name())+":"+value(fd, m.Get(fd)))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func value(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch {
	case fd.IsList():
		var items []string
		for i := range v.List().Len() {
			items = append(items, scalar(fd, v.List().Get(i)))
		}
		return "[" + strings.Join(items, " ") + "]"
	case fd.IsMap():
		var items []string
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			items = append(items, k.String()+"="+scalar(fd.MapValue(), mv))
			return true
		})
		slices.Sort(items)
		return "{" + strings.Join(items, " ") + "}"
	}
	return scalar(fd, v)
}

func scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return text(v.Message())
	case protoreflect.StringKind:
		return strconv.Quote(v.String())
	}
	return v.String()
}
