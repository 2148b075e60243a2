package apiserver_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/boot"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
)

// GetBootScript hands out what the boot server would serve: the waiting
// script before the node is Ready, then the booting one with its CHAP
// credentials; with boot tokens, a new token in the URL on every call.
func TestGetBootScript(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	n := newNode("n1", "img")
	n.Spec.Chap, n.Spec.MutualChap = true, true
	n.Spec.Macs = []string{"52:54:00:00:00:01"}
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
		t.Fatal(err)
	}

	// No agent yet: the script waits and says why.
	got, err := e.api.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got.Script, "echo sanboot: node default/n1 is Pending") || strings.Contains(got.Script, "sanboot iscsi:") {
		t.Errorf("script of a node without an agent:\n%s", got.Script)
	}
	if got.Url != "/boot/default/n1" {
		t.Errorf("url = %q, want /boot/default/n1 (no --boot-url, no listen address)", got.Url)
	}

	a := e.agent("a", 10, "img")
	go a.Serve(e.ctx, e.log)
	e.waitNode("n1", phase(api.PhaseReady))
	var secret sanbootv1.ChapSecret
	resp, err := e.cli.Get(e.ctx, api.SecretKey("default", "n1"))
	if err != nil || len(resp.Kvs) != 1 || proto.Unmarshal(resp.Kvs[0].Value, &secret) != nil {
		t.Fatalf("secret record: %v %v", resp, err)
	}
	got, err = e.api.GetBootScript(e.ctx, &sanbootv1.GetRequest{Project: "default", Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"set initiator-iqn " + api.DefaultInitiatorIQN("default", "n1"),
		"set username " + secret.User, "set password " + secret.Secret,
		"set reverse-username " + secret.MutualUser, "set reverse-password " + secret.MutualSecret,
		"sanboot iscsi:127.0.0.1::3260:0:" + api.TargetIQN("", "default", "n1") + " || goto sanboot-retry",
		"chain --replace --autofree /boot/default/n1 || goto sanboot-retry",
	} {
		if !strings.Contains(got.Script, want) {
			t.Errorf("script lacks %q:\n%s", want, got.Script)
		}
	}
	efiLine := `sanboot --filename %s iscsi:127.0.0.1::3260:0:` + api.TargetIQN("", "default", "n1")
	if !strings.Contains(got.Script, fmt.Sprintf(efiLine, boot.DefaultEFIFilename)) {
		t.Errorf("script of a node on an image without spec.efiBootPath does not boot %s under UEFI:\n%s", boot.DefaultEFIFilename, got.Script)
	}
	// The image names its own EFI boot loader: UEFI nodes boot that.
	im, err := e.api.GetImage(e.ctx, &sanbootv1.GetRequest{Name: "img"})
	if err != nil {
		t.Fatal(err)
	}
	im.Spec.EfiBootPath = `\EFI\debian\shimx64.efi`
	if _, err := e.putImage(im, apply); err != nil {
		t.Fatal(err)
	}
	got, err = e.api.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil || !strings.Contains(got.Script, fmt.Sprintf(efiLine, `\EFI\debian\shimx64.efi`)) || strings.Contains(got.Script, "BOOTX64") {
		t.Errorf("script of a node on an image with spec.efiBootPath = %v:\n%s", err, got.GetScript())
	}
	if fakeagent.Portal != "127.0.0.1:3260" {
		t.Fatalf("the fake agent's portal changed (%s): update this test", fakeagent.Portal)
	}

	_, err = e.api.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `node "nope" not found`)
	_, err = e.api.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "Bad_Name"})
	wantCode(t, err, codes.InvalidArgument, "name")

	// With boot tokens: each call issues a new token, kept as a hash.
	srv := apiserver.New(e.cli, apiserver.Config{Log: e.log, Boot: boot.Settings{Tokens: true, Listen: "127.0.0.1:8080"}})
	first, err := srv.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := srv.GetBootScript(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "http://127.0.0.1:8080/boot/default/n1?token="
	if !strings.HasPrefix(first.Url, prefix) || !strings.HasPrefix(second.Url, prefix) || first.Url == second.Url {
		t.Fatalf("urls %q and %q: want two different tokens after %s", first.Url, second.Url, prefix)
	}
	if strings.Contains(second.Script, "chain") || !strings.Contains(second.Script, "set password "+secret.Secret) {
		t.Errorf("a booting script with a token must retry in place (its token is spent once served):\n%s", second.Script)
	}
	var rec sanbootv1.BootToken
	resp, err = e.cli.Get(e.ctx, api.BootTokenKey("default", "n1"))
	if err != nil || len(resp.Kvs) != 1 || proto.Unmarshal(resp.Kvs[0].Value, &rec) != nil {
		t.Fatalf("token record: %v %v", resp, err)
	}
	token := strings.TrimPrefix(second.Url, prefix)
	if rec.Sha256 == "" || strings.Contains(rec.Sha256, token) || rec.NodeUid == "" || resp.Kvs[0].Lease == 0 {
		t.Errorf("token record %v (lease %d): want a hash of the token, the node's uid, a lease", &rec, resp.Kvs[0].Lease)
	}

	// No other read carries the secrets.
	node, err := e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if s := node.String(); strings.Contains(s, secret.Secret) || strings.Contains(s, secret.MutualSecret) {
		t.Errorf("GetNode leaks a CHAP secret")
	}
}

// TestLastBootFetch: GetNode shows what the boot server recorded of the
// node's last script fetch, and not what a predecessor of the same name
// left.
func TestLastBootFetch(t *testing.T) {
	e := start(t)
	e.image("default", "golden")
	e.node("n1", "golden")
	node, err := e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil || node.GetLastBootFetch() != nil {
		t.Fatalf("a node never fetched: %v, %v", node.GetLastBootFetch(), err)
	}
	put := func(uid string) {
		b, err := proto.Marshal(&sanbootv1.BootFetch{NodeUid: uid, RemoteAddr: "10.0.0.21:49152", Platform: "efi", Outcome: "boot"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Put(e.ctx, api.BootFetchKey("default", "n1"), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	put("uid-of-an-earlier-n1")
	if node, err = e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n1"}); err != nil || node.GetLastBootFetch() != nil {
		t.Fatalf("a predecessor's fetch shows: %v, %v", node.GetLastBootFetch(), err)
	}
	put(node.GetMetadata().GetUid())
	node, err = e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if f := node.GetLastBootFetch(); err != nil || f.GetPlatform() != "efi" || f.GetRemoteAddr() != "10.0.0.21:49152" || f.GetOutcome() != "boot" {
		t.Fatalf("GetNode's last fetch: %v, %v", f, err)
	}
}
