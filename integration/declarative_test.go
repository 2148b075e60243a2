package integration_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/ctl/cli"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/syncbuf"
)

// examples are the commented manifests users start from.
const examples = "../examples"

// background runs sanbootctl until the returned stop is called; stop
// returns its stdout.
func (s *system) background(args ...string) (out *syncbuf.Buffer, stop func()) {
	out = &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	env := map[string]string{"SANBOOT_ENDPOINTS": s.addr, "HOME": s.t.TempDir()}
	go func() {
		defer close(done)
		cli.Run(ctx, cli.Env{Stdout: out, Stderr: &syncbuf.Buffer{}, Getenv: func(k string) string { return env[k] }}, args)
	}()
	return out, func() { cancel(); <-done }
}

// wants fails unless text holds every one of parts.
func wants(t *testing.T, what, text string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("%s lacks %q:\n%s", what, p, text)
		}
	}
}

// edit writes a copy of examples/name as file as in a directory of the
// test, with each old replaced by its new (pairs) and extra appended; it
// returns its path.
func edit(t *testing.T, name, as, extra string, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examples, name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("examples/%s no longer holds %q: update this test", name, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	p := filepath.Join(t.TempDir(), as)
	if err := os.WriteFile(p, []byte(s+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeclarative is sanbootctl's declarative commands end to end (it was
// hack/e2e-apply.sh): the whole member and an agent with the fake driver,
// the commented manifests in examples/: diff, apply (--dry-run, --wait,
// --prune), get (-o name, jsonpath, -w), describe, wait --for=condition,
// config view, delete (node, --keep-disk, -f) and a bad manifest that must
// write nothing.
func TestDeclarative(t *testing.T) {
	m := startMember(t)
	startFakeAgent(t, m.endpoints(), "a1", 10*time.Second)
	m.waitPhase("agents", "a1", "Ready")
	images, nodes := filepath.Join(examples, "images.yaml"), filepath.Join(examples, "nodes.yaml")

	out, _ := m.expect(cli.ExitOK, "config", "view")
	wants(t, "config view", out, "endpointsFrom: SANBOOT_ENDPOINTS")

	// diff before anything exists: exit 1, all additions.
	out, _ = m.expect(cli.ExitError, "diff", "-f", images)
	wants(t, "diff", out, "+++ applied image/base")

	// apply --dry-run=server writes nothing.
	out, _ = m.expect(cli.ExitOK, "apply", "-f", images, "--dry-run=server")
	wants(t, "apply --dry-run=server", out, "image/base created (server dry run)")
	m.expect(cli.ExitNotFound, "get", "image", "base")

	// A bad manifest is refused as a whole, with file:line:column, and
	// writes nothing.
	bad := edit(t, "nodes.yaml", "bad.yaml", "  imgae: typo\n", `macs: ["52:54:00:00:00:02"]`, `macs: ["52:54:00:00:00:02", "nope"]`)
	_, errOut := m.expect(cli.ExitError, "apply", "-f", images, "-f", bad)
	wants(t, "apply of a bad manifest", errOut, `bad.yaml:32:31: node/n2: spec.macs[1]: "nope" is not a MAC address`,
		`bad.yaml:36:3: node/n2: spec.imgae: unknown field; did you mean "image"?`)
	m.expect(cli.ExitNotFound, "get", "image", "base")

	// Apply the images and wait, then the nodes and wait, watched by get -w.
	out, _ = m.expect(cli.ExitOK, "apply", "-f", images, "--wait", "--timeout", "60s")
	wants(t, "apply --wait", out, "image/base created", "image/base ready")
	watch, stopWatch := m.background("get", "nodes", "-w")
	m.expect(cli.ExitError, "diff", "-f", nodes)
	out, _ = m.expect(cli.ExitOK, "apply", "-f", nodes, "--wait", "--timeout", "60s")
	wants(t, "apply --wait", out, "node/n1 created", "node/n2 created", "node/n1 ready", "node/n2 ready")
	eventually.True(t, "get -w to show n2 Ready", func() bool { return regexp.MustCompile(`(?m)^n2 .* Ready`).MatchString(watch.String()) },
		eventually.Seen(watch.String))
	stopWatch()

	// Applying again changes nothing; diff exits 0.
	out, _ = m.expect(cli.ExitOK, "apply", "-f", examples)
	wants(t, "apply again", out, "image/base unchanged", "node/n1 unchanged")
	m.expect(cli.ExitOK, "diff", "-f", examples)

	// get -o name, -o jsonpath, -l; describe; wait --for=condition.
	if out, _ = m.expect(cli.ExitOK, "get", "nodes", "-l", "rack=r1", "-o", "name"); out != "node/n1\nnode/n2\n" {
		t.Errorf("get -o name = %q", out)
	}
	out, _ = m.expect(cli.ExitOK, "get", "node", "n1", "-o", "jsonpath={.status.targetIqn}")
	wants(t, "get -o jsonpath", out, "iqn.2026-11.io.sanboot:default.n1")
	out, _ = m.expect(cli.ExitOK, "describe", "node", "n1")
	wants(t, "describe", out, "Target IQN: iqn.2026-11.io.sanboot:default.n1", "Agent:      a1 (Ready", "Created", "phase Ready")
	m.expect(cli.ExitOK, "wait", "node", "n1", "n2", "--for=condition=Scheduled", "--timeout", "30s")

	// A changed label: diff exits 1, apply says configured.
	gpu := edit(t, "nodes.yaml", "nodes.yaml", "", "role: worker", "role: gpu")
	out, _ = m.expect(cli.ExitError, "diff", "-f", gpu)
	wants(t, "diff of a changed label", out, "+    role: gpu")
	out, _ = m.expect(cli.ExitOK, "apply", "-f", gpu)
	wants(t, "apply of a changed label", out, "node/n1 configured")

	// A node whose image does not exist: the API refuses it (exit 5,
	// conflict), the others apply.
	other := edit(t, "nodes.yaml", "nodes.yaml", "", "image: base ", "image: other")
	out, errOut = m.expect(cli.ExitConflict, "apply", "-f", images, "-f", other)
	wants(t, "apply of a node on a missing image", errOut, `node/n1: spec.image: image "other" does not exist in project "default"`)
	wants(t, "apply of a node on a missing image", out, "node/n2 configured") // back to role=worker

	// Prune: n2 left the file, so apply --prune -l rack=r1 deletes it.
	b, err := os.ReadFile(nodes)
	if err != nil {
		t.Fatal(err)
	}
	onlyN1 := filepath.Join(t.TempDir(), "only-n1.yaml")
	if err := os.WriteFile(onlyN1, []byte(strings.SplitN(string(b), "---\n", 2)[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ = m.expect(cli.ExitOK, "apply", "-f", onlyN1, "--prune", "-l", "rack=r1", "--dry-run=server")
	wants(t, "apply --prune --dry-run=server", out, "node/n2 pruned (server dry run)")
	out, _ = m.expect(cli.ExitOK, "apply", "-f", onlyN1, "--prune", "-l", "rack=r1")
	wants(t, "apply --prune", out, "node/n2 pruned")
	m.expect(cli.ExitOK, "wait", "node", "n2", "--for=deleted", "--timeout", "60s")

	// delete node --keep-disk snapshots the disk into an image first.
	out, _ = m.expect(cli.ExitOK, "delete", "node", "n1", "--keep-disk", "--wait", "--timeout", "60s")
	wants(t, "delete --keep-disk", out, "node/n1 disk kept as image/n1-disk-", "node/n1 deleted")
	kept := regexp.MustCompile(`disk kept as image/(\S+)`).FindStringSubmatch(out)
	if kept == nil {
		t.Fatalf("delete --keep-disk names no image:\n%s", out)
	}
	out, _ = m.expect(cli.ExitOK, "get", "image", kept[1], "-o", "jsonpath={.spec.parent} {.status.phase}")
	wants(t, "the kept image", out, "base Ready")
	m.expect(cli.ExitOK, "image", "rm", kept[1])

	// delete -f: the file's nodes, then its images.
	m.expect(cli.ExitOK, "apply", "-f", examples, "--wait", "--timeout", "60s")
	out, _ = m.expect(cli.ExitOK, "delete", "-f", examples, "--wait", "--timeout", "60s")
	wants(t, "delete -f", out, "node/n1 deleted", "image/base deleted")
	if out, _ = m.expect(cli.ExitOK, "get", "nodes", "-o", "name"); out != "" {
		t.Errorf("nodes left after delete -f: %q", out)
	}
}
