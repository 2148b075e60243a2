package boot

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/kv"
)

// bootEnv is a real etcd member and a boot server on a loopback port. The
// test writes, straight into etcd, the records the API server, the
// scheduler and an agent would write (a FAKE of those writers).
type bootEnv struct {
	t    *testing.T
	cli  *clientv3.Client
	base string // http://127.0.0.1:PORT
	ctx  context.Context
}

func startBoot(t *testing.T, s Settings) *bootEnv {
	t.Helper()
	m := etcdtest.Start(t)
	cli := m.Client(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := NewServer(cli, Config{Settings: s, Log: log})
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	e := &bootEnv{t: t, cli: cli, base: "http://" + lis.Addr().String(), ctx: ctx}
	e.putAlive("rack1")
	return e
}

func (e *bootEnv) put(key string, msg proto.Message) {
	e.t.Helper()
	op, err := kv.PutOp(key, msg)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.cli.Do(e.ctx, op); err != nil {
		e.t.Fatal(err)
	}
}

func (e *bootEnv) putAlive(agent string) {
	e.t.Helper()
	if _, err := e.cli.Put(e.ctx, api.AliveKey(agent), ""); err != nil {
		e.t.Fatal(err)
	}
}

// putNode writes node n (placed on rack1, with n.Status as the agent's
// report when its phase is set) and secret, if not nil.
func (e *bootEnv) putNode(n *sanbootv1.Node, secret *sanbootv1.ChapSecret) {
	e.t.Helper()
	p, name := n.Metadata.Project, n.Metadata.Name
	rec := &sanbootv1.Node{Metadata: n.Metadata, Spec: n.Spec}
	e.put(api.NodeKey(p, name), rec)
	e.put(api.PlacementKey(p, name), &sanbootv1.Placement{Agent: "rack1", Generation: n.Metadata.Generation})
	if n.Status.GetPhase() != "" {
		e.put(api.NodeStatusKey(p, name, "rack1"), n.Status)
	}
	if secret != nil {
		e.put(api.SecretKey(p, name), secret)
	}
}

// awaitFetch waits until the boot-script fetch recorded for a node
// satisfies ok (the server writes it after the node has its script).
func (e *bootEnv) awaitFetch(project, name string, ok func(*sanbootv1.BootFetch) bool) {
	e.t.Helper()
	f := &sanbootv1.BootFetch{}
	eventually.True(e.t, "the recorded fetch of "+project+"/"+name, func() bool {
		f.Reset()
		_, err := kv.Get(e.ctx, e.cli, api.BootFetchKey(project, name), f)
		return err == nil && ok(f)
	}, eventually.Seen(f.String))
}

// get fetches path and returns the status code and body.
func (e *bootEnv) get(path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(e.base + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// await fetches path until its script holds want (the cache follows etcd
// through a watch) and returns it.
func (e *bootEnv) await(path, want string) string {
	e.t.Helper()
	var code int
	var body string
	eventually.True(e.t, fmt.Sprintf("GET %s to hold %q", path, want), func() bool {
		code, body = e.get(path)
		return code == http.StatusOK && strings.Contains(body, want)
	}, eventually.Seen(func() string { return fmt.Sprintf("(%d)\n%s", code, body) }))
	return body
}

const sanbootLine = "sanboot iscsi:"

func TestServeByMACAndName(t *testing.T) {
	e := startBoot(t, Settings{})

	code, body := e.get("/boot.ipxe")
	if code != http.StatusOK || !strings.Contains(body, "chain --replace --autofree /boot?mac=${net0/mac:hexhyp}&platform=${platform} ") {
		t.Fatalf("generic script (%d):\n%s", code, body)
	}
	e.await("/boot?mac=52:54:00:00:00:09", "no node has MAC 52:54:00:00:00:09")

	// A node that is still being provisioned waits, then boots.
	n1 := readyNode("n1", func(n *sanbootv1.Node) {
		n.Spec.Macs = []string{"52:54:00:00:00:01", "52:54:00:0a:01:01"}
		n.Status.Phase, n.Status.Message = api.PhaseProvisioning, "cloning"
	})
	e.putNode(n1, nil)
	body = e.await("/boot?mac=52-54-00-00-00-01", "node default/n1 is Provisioning: cloning")
	if !strings.Contains(body, "chain --replace --autofree /boot?mac=52-54-00-00-00-01 ") {
		t.Errorf("waiting script does not fetch its own URL again:\n%s", body)
	}
	n1.Status.Phase, n1.Status.Message = api.PhaseReady, ""
	e.putNode(n1, nil)
	body = e.await("/boot?mac=52:54:00:0a:01:01", sanbootLine)
	checkScript(t, body)
	if !strings.Contains(body, "sanboot iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 ||") {
		t.Errorf("boot script:\n%s", body)
	}
	// Upper case and any separator name the same MAC.
	e.await("/boot?mac=52-54-00-0A-01-01", sanbootLine)
	// The firmware the node names comes back in its retries; a UEFI node
	// is told the boot loader to run.
	body = e.await("/boot?mac=52-54-00-0A-01-01&platform=efi", sanbootLine)
	for _, want := range []string{"chain --replace --autofree /boot?mac=52-54-00-0a-01-01&platform=efi ||",
		`sanboot --filename \EFI\BOOT\BOOTX64.EFI iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 ||`} {
		if !strings.Contains(body, want) {
			t.Errorf("script lacks %q:\n%s", want, body)
		}
	}
	// An image that names its own EFI boot loader: its nodes boot that.
	e.put(api.ImageKey("default", n1.GetSpec().GetImage()), &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: n1.GetSpec().GetImage()},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 1 << 20, EfiBootPath: `\EFI\debian\shimx64.efi`}})
	e.await("/boot?mac=52-54-00-0A-01-01&platform=efi", `sanboot --filename \EFI\debian\shimx64.efi iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 ||`)
	// ... and the fetch is recorded for describe.
	e.awaitFetch("default", "n1", func(f *sanbootv1.BootFetch) bool {
		return f.GetNodeUid() == "uid-n1" && f.GetPlatform() == "efi" && f.GetOutcome() == FetchBoot && !f.GetToken() &&
			strings.HasPrefix(f.GetRemoteAddr(), "127.0.0.1:") && time.Since(f.GetTime().AsTime()) < time.Minute
	})

	// By name, in another project, with mutual CHAP.
	n2 := readyNode("n2", mutual, func(n *sanbootv1.Node) { n.Metadata.Project = "lab"; n.Spec.Macs = nil })
	e.putNode(n2, chapSecret)
	body = e.await("/boot/lab/n2", sanbootLine)
	for _, want := range []string{"set password SECRETSECRETSECRET42", "set reverse-password MUTUALMUTUALMUTUAL42", "chain --replace --autofree /boot/lab/n2 ||"} {
		if !strings.Contains(body, want) {
			t.Errorf("script lacks %q:\n%s", want, body)
		}
	}

	// A MAC in two nodes is a mistake the console shows.
	n3 := readyNode("n3", func(n *sanbootv1.Node) { n.Spec.Macs = []string{"52:54:00:00:00:01"} })
	e.putNode(n3, nil)
	e.await("/boot?mac=52:54:00:00:00:01", "MAC 52:54:00:00:00:01 is in the spec.macs of several nodes (default/n1, default/n3)")
	// ... until it is taken out of one; a MAC taken away is unknown.
	n1.Spec.Macs = []string{"52:54:00:0a:01:01"}
	e.putNode(n1, nil)
	e.await("/boot?mac=52:54:00:00:00:01", "node default/n3")
	n3.Spec.Macs = nil
	e.putNode(n3, nil)
	e.await("/boot?mac=52:54:00:00:00:01", "no node has MAC")
	// A deleting node boots no more and gives its MACs up (the API frees
	// them for another node at once): the new node boots by them.
	n3.Spec.Macs = []string{"52:54:00:00:00:01"}
	n3.Metadata.DeleteTime = timestamppb.Now()
	e.putNode(n3, nil)
	n4 := readyNode("n4", func(n *sanbootv1.Node) { n.Spec.Macs = []string{"52:54:00:00:00:01"} })
	e.putNode(n4, nil)
	body = e.await("/boot?mac=52:54:00:00:00:01", sanbootLine)
	if !strings.Contains(body, "default.n4") {
		t.Errorf("the MAC of a deleting node and a new one boots:\n%s", body)
	}

	// The agent's lease expires: the node waits again.
	if _, err := e.cli.Delete(e.ctx, api.AliveKey("rack1")); err != nil {
		t.Fatal(err)
	}
	e.await("/boot/default/n1", "node default/n1 is Unavailable")
	e.await("/boot/default/gone", "there is no node default/gone")
}

func TestBadRequests(t *testing.T) {
	e := startBoot(t, Settings{})
	for path, want := range map[string]int{
		"/boot":                                      http.StatusBadRequest,
		"/boot?mac=52:54:00:zz:00:01":                http.StatusBadRequest,
		"/boot?mac=52:54:00:00:00:01%0a":             http.StatusBadRequest,
		"/boot/Default/n1":                           http.StatusBadRequest,
		"/boot/default/n1%20x":                       http.StatusBadRequest,
		"/boot/default/n1?token=x${y}":               http.StatusBadRequest,
		"/boot/default/n1?token=abc":                 http.StatusBadRequest,
		"/boot/default/n1?platform=EFI":              http.StatusBadRequest,
		"/boot/default/n1?platform=efi%20||%20shell": http.StatusBadRequest,
		"/boot?mac=52:54:00:00:00:01&platform=${x}":  http.StatusBadRequest,
		"/boot/default":                              http.StatusNotFound,
		"/boot/a/b/c":                                http.StatusNotFound,
		"/other":                                     http.StatusNotFound,
	} {
		if code, body := e.get(path); code != want {
			t.Errorf("GET %s = %d, want %d: %s", path, code, want, body)
		}
	}
	resp, err := http.Post(e.base+"/boot?mac=52:54:00:00:00:01", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d, want 405", resp.StatusCode)
	}
}

func TestTokens(t *testing.T) {
	s := Settings{Tokens: true, TokenTTL: time.Hour}
	e := startBoot(t, s)
	n1 := readyNode("n1", chap, func(n *sanbootv1.Node) { n.Status.Phase = api.PhaseProvisioning })
	e.putNode(n1, chapSecret)
	ref := state.Ref{Project: "default", Name: "n1"}

	// Without a token, or with one that was never issued, nothing leaks.
	body := e.await("/boot/default/n1", "serves scripts only to URLs with a one-time boot token")
	if strings.Contains(body, "SECRET") || strings.Contains(body, "Provisioning") {
		t.Errorf("a request without a token learnt about the node:\n%s", body)
	}
	body = e.await("/boot/default/n1?token=AAAAAAAAAAAAAAAAAAAAAAAAAA", "the boot token is not valid")
	if strings.Contains(body, "SECRET") {
		t.Errorf("script for a wrong token:\n%s", body)
	}
	// The fetch is recorded as one with a token that waits, without the token.
	e.awaitFetch("default", "n1", func(f *sanbootv1.BootFetch) bool {
		return f.GetToken() && f.GetOutcome() == FetchWait && strings.Contains(f.GetMessage(), "the boot token is not valid")
	})

	token, err := IssueToken(e.ctx, e.cli, ref, "uid-n1", s.TokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	// Not Ready: the node is told why, and the token is kept for later.
	path := "/boot/default/n1?token=" + token
	body = e.await(path, "node default/n1 is Provisioning")
	if !strings.Contains(body, "chain --replace --autofree "+path+" ||") {
		t.Errorf("waiting script does not come back with its token:\n%s", body)
	}
	e.get(path)

	// Ready: the script is served once; its retries need no new fetch.
	n1.Status.Phase = api.PhaseReady
	e.putNode(n1, chapSecret)
	body = e.await(path, sanbootLine)
	if !strings.Contains(body, "set password SECRETSECRETSECRET42") || strings.Contains(body, "chain") || !strings.Contains(body, "goto sanboot\n") {
		t.Errorf("boot script with a token:\n%s", body)
	}
	code, body := e.get(path)
	if code != http.StatusOK || !strings.Contains(body, "the boot token is not valid") || strings.Contains(body, "SECRET") {
		t.Errorf("a used token served again (%d):\n%s", code, body)
	}
	if strings.Contains(body, token) || !strings.Contains(body, "chain --replace --autofree /boot/default/n1 ||") {
		t.Errorf("the script for a used token repeats it, or does not fetch itself again without it:\n%s", body)
	}

	// A token is the node's, not its name's; a new token replaces the last one.
	stale, err := IssueToken(e.ctx, e.cli, ref, "uid-of-an-earlier-n1", s.TokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, body := e.get("/boot/default/n1?token=" + stale); !strings.Contains(body, "the boot token is not valid") {
		t.Errorf("a token of another node with the same name works:\n%s", body)
	}
	old, err := IssueToken(e.ctx, e.cli, ref, "uid-n1", s.TokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := IssueToken(e.ctx, e.cli, ref, "uid-n1", s.TokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, body := e.get("/boot/default/n1?token=" + old); !strings.Contains(body, "the boot token is not valid") {
		t.Errorf("a replaced token still works:\n%s", body)
	}
	if _, body := e.get("/boot/default/n1?token=" + cur); !strings.Contains(body, sanbootLine) {
		t.Errorf("the current token does not work:\n%s", body)
	}

	// Two fetches race for one token: exactly one gets the credentials,
	// by MAC or by name.
	var raced string        // the last token the racing fetches used
	var lastRound time.Time // when the last round began
	for round := range 5 {
		lastRound = time.Now()
		token, err := IssueToken(e.ctx, e.cli, ref, "uid-n1", s.TokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		raced = token
		paths := []string{"/boot/default/n1?token=" + token, "/boot?mac=52:54:00:00:00:01&token=" + token, "/boot/default/n1?token=" + token}
		var wg sync.WaitGroup
		bodies := make([]string, len(paths))
		for i, p := range paths {
			wg.Go(func() { _, bodies[i] = e.get(p) })
		}
		wg.Wait()
		booted := 0
		for _, b := range bodies {
			if strings.Contains(b, sanbootLine) {
				booted++
			}
		}
		if booted != 1 {
			t.Fatalf("round %d: %d of %d racing fetches got the credentials, want 1", round, booted, len(paths))
		}
	}

	// An issued token lives under a lease of its TTL.
	if _, err := IssueToken(e.ctx, e.cli, ref, "uid-n1", 7*time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := e.cli.Get(e.ctx, api.BootTokenKey("default", "n1"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("token record %v, %v: want one, under a lease", resp, err)
	}
	ttl, err := e.cli.TimeToLive(e.ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil || ttl.GrantedTTL != 7 {
		t.Fatalf("token lease: %v, %v; want a granted TTL of 7 s", ttl, err)
	}
	if strings.Contains(string(resp.Kvs[0].Value), token) {
		t.Errorf("etcd holds the token itself, not its hash")
	}
	e.awaitFetch("default", "n1", func(f *sanbootv1.BootFetch) bool { return !f.GetTime().AsTime().Before(lastRound) })
	if resp, err := e.cli.Get(e.ctx, api.BootFetchKey("default", "n1")); err != nil || len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Value), raced) {
		t.Errorf("the recorded fetch holds the token (or is missing): %v, %v", resp, err)
	}
}
