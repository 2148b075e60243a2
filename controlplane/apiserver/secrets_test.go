package apiserver_test

import (
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
)

// A node with CHAP gets credentials once, its assignment carries them, no
// read of the API returns them, and deletion removes them.
func TestCHAPSecretLifecycle(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	a := e.agent("a", 10, "img")
	n := newNode("n1", "img")
	n.Spec.Chap, n.Spec.MutualChap = true, true
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
		t.Fatal(err)
	}
	secret := func() *sanbootv1.ChapSecret {
		var s sanbootv1.ChapSecret
		resp, err := e.cli.Get(e.ctx, api.SecretKey("default", "n1"))
		if err != nil || len(resp.Kvs) != 1 || proto.Unmarshal(resp.Kvs[0].Value, &s) != nil {
			t.Fatalf("secret record: %v %v", resp, err)
		}
		return &s
	}
	first := secret()
	if len(first.Secret) < 12 || len(first.MutualSecret) < 12 || first.User == "" || first.Secret == first.MutualSecret {
		t.Fatalf("weak or missing credentials: user %q, secret lengths %d and %d", first.User, len(first.Secret), len(first.MutualSecret))
	}

	var asg sanbootv1.Assignment
	eventually.True(t, "assignment with CHAP", func() bool {
		resp, err := e.cli.Get(e.ctx, api.AssignKey("a", "default", "n1"))
		return err == nil && len(resp.Kvs) == 1 && proto.Unmarshal(resp.Kvs[0].Value, &asg) == nil && asg.Chap != nil
	}, eventually.Seen(func() string { return asg.String() }))
	if !proto.Equal(asg.Chap, first) {
		t.Errorf("assignment CHAP differs from the secret record")
	}

	// A spec change keeps the same credentials.
	n.Spec.Macs = []string{"52:54:00:00:00:01"}
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(secret(), first) {
		t.Errorf("credentials changed on a spec update")
	}

	// No read through the API carries a secret.
	got, err := e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []proto.Message{got, list} {
		js := protojson.Format(m)
		if strings.Contains(js, first.Secret) || strings.Contains(js, first.MutualSecret) {
			t.Errorf("API read leaks a CHAP secret: %s", js)
		}
	}

	// Deletion removes the credentials with the node.
	if _, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "deleting assignment", func() bool {
		resp, err := e.cli.Get(e.ctx, api.AssignKey("a", "default", "n1"))
		return err == nil && len(resp.Kvs) == 1 && proto.Unmarshal(resp.Kvs[0].Value, &asg) == nil && asg.Deleting
	}, eventually.Seen(func() string { return asg.String() }))
	if err := a.Report(e.ctx, "default", "n1", api.PhaseDeleted, ""); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "secret removed", func() bool {
		resp, err := e.cli.Get(e.ctx, api.SecretsPrefix(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	}, eventually.Seen(func() string { return "secret still there" }))
}
