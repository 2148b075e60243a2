package integration_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/ctl/cli"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/eventually"
)

// member is the whole control plane as sanboot-controlplane runs it
// (controlplane.Run: embedded etcd, API, elected scheduler) with
// sanbootctl's command tree pointed at it.
type member struct {
	*system
	cfg  controlplane.Config
	stop func() error
}

func startMember(t *testing.T) *member {
	t.Helper()
	m := &member{cfg: cptest.MemberConfig(t, "cp1")}
	m.stop = cptest.RunMember(t, m.cfg)
	cli, err := clientv3.New(clientv3.Config{Endpoints: m.endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(m.cfg.APIListen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close(); cli.Close() })
	m.system = &system{t: t, ctx: ctx, cli: cli, api: sanbootv1.NewSanbootClient(conn), addr: m.cfg.APIListen}
	return m
}

func (m *member) endpoints() []string { return []string{m.cfg.Member.Client.ListenURLs[0].String()} }

// restart stops the member and runs it again on the same data.
func (m *member) restart() {
	m.t.Helper()
	if err := m.stop(); err != nil {
		m.t.Fatalf("the control plane's stop: %v", err)
	}
	m.stop = cptest.RunMember(m.t, m.cfg)
}

// expect runs sanbootctl, which must exit with code, and returns its
// stdout and stderr.
func (s *system) expect(code int, args ...string) (stdout, stderr string) {
	s.t.Helper()
	got, stdout, stderr := s.run(args...)
	if got != code {
		s.t.Fatalf("sanbootctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, stdout, stderr)
	}
	return stdout, stderr
}

// phaseOf is the phase sanbootctl shows for a node or the state for an
// agent (get KIND NAME -o json), "" when it shows none.
func (s *system) phaseOf(kind, name string) string {
	_, out, _ := s.run("get", kind, name, "-o", "json")
	field := `"phase"`
	if kind == "agents" {
		field = `"state"`
	}
	m := regexp.MustCompile(field + `: *"([A-Za-z]+)"`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

func (s *system) waitPhase(kind, name, want string) {
	s.t.Helper()
	var got string
	eventually.True(s.t, kind+" "+name+" "+want, func() bool { got = s.phaseOf(kind, name); return got == want },
		eventually.Seen(func() string { return got }))
}

// TestFoundation is the control plane's foundation end to end (it was
// hack/e2e.sh): the whole member and an agent with the fake driver, driven
// by sanbootctl; nodes provisioned, bad input refused with nothing
// written, an image in use kept, an agent that crashes shown Unavailable
// and Ready again after its restart with its assignments, a two-step
// delete, and the state kept across a control-plane restart.
func TestFoundation(t *testing.T) {
	const ttl = 5 * time.Second
	m := startMember(t)
	a := startFakeAgent(t, m.endpoints(), "a1", ttl)
	m.waitPhase("agents", "a1", "Ready")

	// Image metadata and two nodes.
	m.expect(cli.ExitOK, "image", "create", "golden", "--size", "1GiB")
	eventually.True(t, "image golden replicated to a1", func() bool {
		_, out, _ := m.run("get", "images", "golden", "-o", "json")
		return regexp.MustCompile(`"phase": *"Ready"`).MatchString(out)
	})
	m.expect(cli.ExitOK, "provision", "n1", "--image", "golden", "--mac", "52:54:00:00:00:01", "--wait", "--timeout", "60s")
	m.expect(cli.ExitOK, "provision", "n2", "--image", "golden", "--initiator", "iqn.2026-11.io.example:n2", "--wait", "--timeout", "60s")
	if out, _ := m.expect(cli.ExitOK, "get", "nodes", "-o", "wide"); !regexp.MustCompile(`(?m)^n1 .*Ready`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^n2 .*Ready`).MatchString(out) {
		t.Errorf("get nodes -o wide does not show n1 and n2 Ready:\n%s", out)
	}
	if p := m.phaseOf("nodes", "n1"); p != api.PhaseReady {
		t.Fatalf("n1 is %q, want Ready", p)
	}
	if out, _ := m.expect(cli.ExitOK, "get", "nodes", "n1", "-o", "json"); !regexp.MustCompile(`"targetIqn": *"iqn.2026-11.io.sanboot:default.n1"`).MatchString(out) {
		t.Errorf("n1 has the wrong target IQN:\n%s", out)
	}

	// Bad input is refused and nothing is written.
	if _, errOut := m.expect(cli.ExitError, "provision", "Bad_Name", "--image", "golden"); !strings.Contains(errOut, "DNS label") {
		t.Errorf("the refusal of an invalid name does not say what is allowed: %s", errOut)
	}
	if code, _, _ := m.run("provision", "n3", "--image", "golden", "--mac", "52:54:00:zz:00:01"); code == cli.ExitOK {
		t.Error("an invalid MAC was accepted")
	}
	m.expect(cli.ExitNotFound, "get", "nodes", "n3")

	// An image in use cannot be removed.
	if _, errOut := m.expect(cli.ExitConflict, "image", "rm", "golden"); !strings.Contains(errOut, "n1") {
		t.Errorf("the refusal does not name the nodes: %s", errOut)
	}

	// The agent crashes: it shows Unavailable once its lease expires, and
	// so do its nodes.
	a.crash()
	m.waitPhase("agents", "a1", "Unavailable")
	if p := m.phaseOf("nodes", "n1"); p != api.PhaseUnavailable {
		t.Errorf("n1 is %q once its agent is gone, want Unavailable", p)
	}

	// Restarted, it is Ready again with its assignments.
	startFakeAgent(t, m.endpoints(), "a1", ttl)
	m.expect(cli.ExitOK, "wait", "node", "n1", "n2", "--for=ready", "--timeout=60s")

	// A two-step delete.
	m.expect(cli.ExitOK, "deprovision", "n1", "--wait", "--timeout", "60s")
	m.expect(cli.ExitNotFound, "get", "nodes", "n1")

	// The control plane restarts with its state.
	m.restart()
	m.waitPhase("nodes", "n2", api.PhaseReady)
	m.expect(cli.ExitOK, "deprovision", "n2", "--wait", "--timeout", "60s")
	m.expect(cli.ExitOK, "image", "rm", "golden")
}
