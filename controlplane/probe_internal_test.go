package controlplane

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sanboot/sanboot/internal/etcdtest"
)

// The leader probe: a member that answers passes; a name that is no member
// fails; a client URL that refuses connections fails at once (the TCP dial
// before etcd's Status, which would wait for a connection until the
// probe's deadline).
func TestProbeMember(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	probe := probeMember(cli)
	if err := probe(ctx, ml.Members[0].Name); err != nil {
		t.Errorf("probe of the live member: %v", err)
	}
	if err := probe(ctx, "nobody"); err == nil {
		t.Error("probe of a name that is no member passed")
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := "http://" + l.Addr().String()
	if err := reachable(ctx, open); err != nil {
		t.Errorf("reachable(%s) with a listener: %v", open, err)
	}
	l.Close()
	if err := reachable(ctx, open); err == nil {
		t.Errorf("reachable(%s) passed after its listener closed", open)
	}
	for _, u := range []string{"unix:///run/etcd.sock", "not a url\x7f"} {
		if err := reachable(ctx, u); err != nil {
			t.Errorf("reachable(%q): %v; want nil (Status decides)", u, err)
		}
	}
}
