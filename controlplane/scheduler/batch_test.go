package scheduler

import (
	"context"
	"io"
	"log/slog"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/etcdtest"
)

// One stale node in a batch must not keep the others from being written.
func TestBatchFallsBackToOneNodeAtATime(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	s := New(cli, Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var plans []*plan
	for _, name := range []string{"n1", "n2", "n3"} {
		p := &plan{ref: state.Ref{Project: "default", Name: name}}
		modRev := int64(0) // "does not exist yet": true
		if name == "n2" {
			modRev = 999 // a revision the key never had: the comparison fails
		}
		if err := p.put(api.PlacementKey("default", name), modRev, &sanbootv1.Placement{Agent: "a"}); err != nil {
			t.Fatal(err)
		}
		plans = append(plans, p)
	}
	s.commit(context.Background(), plans)

	resp, err := cli.Get(context.Background(), api.PlacementsPrefix(""), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range resp.Kvs {
		got = append(got, string(kv.Key))
	}
	want := []string{api.PlacementKey("default", "n1"), api.PlacementKey("default", "n3")}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("written = %v, want %v", got, want)
	}
	if r := s.queue.Retries(state.Ref{Project: "default", Name: "n2"}); r != 1 {
		t.Fatalf("the stale node was queued for retry %d times, want 1", r)
	}
	if len(s.written) != 2 {
		t.Fatalf("remembered writes = %v, want n1 and n3", s.written)
	}
}
