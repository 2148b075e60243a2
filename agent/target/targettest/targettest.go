// Package targettest is the conformance suite every target.Driver must pass
// (the fake now; tgt and LIO in their own packages), in the manner of
// containerd's snapshots/testsuite:
//
//	func TestConformance(t *testing.T) {
//		targettest.Run(t, func(t *testing.T) target.Driver { return fake.New() })
//	}
//
// newDriver must return a driver with no target whose IQN starts with
// Prefix; the suite creates its backing files (sparse) in t.TempDir() and
// removes every target it made.
package targettest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/target"
)

// Prefix starts the IQN of every target the suite creates; it looks only at
// those, so a driver may serve others beside them.
const Prefix = "iqn.2026-11.io.sanboot.targettest:"

// Option changes how the suite runs.
type Option func(*config)

type config struct {
	portals []string
	backing Backing
	login   Login
}

// Login logs an initiator named tg.Initiators[0] in to tg (served by d)
// and keeps the session until logout is called (or the test ends).
type Login func(t *testing.T, d target.Driver, tg target.Target) (logout func())

// WithLogin gives the suite an initiator, so that it checks that Sessions
// reports a logged-in initiator and forgets it after its logout. A real
// driver's test passes a real initiator (libiscsi).
func WithLogin(l Login) Option { return func(c *config) { c.login = l } }

// Backing makes the disks the suite's targets serve. The default makes
// sparse files in the subtest's temp dir.
type Backing interface {
	// Make returns the BackingPath of a new disk of size bytes.
	Make(t *testing.T, name string, size int64) string
	// Exists reports whether the disk at path is still there.
	Exists(t *testing.T, path string) bool
}

// WithBacking makes the suite's disks with b, e.g. RBD images for a
// driver that serves rbd:POOL/IMAGE.
func WithBacking(b Backing) Option { return func(c *config) { c.backing = b } }

// WithPortals sets the portals the suite's targets listen on (default
// 127.0.0.1:3260), e.g. the portal of a test's private tgtd.
func WithPortals(portals ...string) Option { return func(c *config) { c.portals = portals } }

// Run runs every conformance test against drivers from newDriver.
func Run(t *testing.T, newDriver func(t *testing.T) target.Driver, opts ...Option) {
	cfg := config{portals: []string{"127.0.0.1:3260"}}
	for _, o := range opts {
		o(&cfg)
	}
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"EnsureCreates", testEnsureCreates},
		{"EnsureTwiceSameState", testEnsureTwice},
		{"EnsureConvergesACL", testConvergesACL},
		{"EnsureConvergesCHAP", testConvergesCHAP},
		{"EnsureConvergesBacking", testConvergesBacking},
		{"DeleteIsIdempotent", testDeleteIdempotent},
		{"ListReflectsReality", testListReflects},
		{"InvalidInputChangesNothing", testInvalidInput},
		{"CanceledContextChangesNothing", testCanceled},
		{"SecretsNeverPrinted", testSecretsNeverPrinted},
		{"SessionsNoneWithoutLogin", testSessionsNone},
	}
	if cfg.login != nil {
		tests = append(tests, struct {
			name string
			fn   func(*testing.T, *suite)
		}{"SessionsShowLogin", testSessionsLogin})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &suite{t: t, d: newDriver(t), cfg: cfg, dir: t.TempDir()}
			t.Cleanup(s.cleanup)
			tc.fn(t, s)
		})
	}
}

type suite struct {
	t   *testing.T
	d   target.Driver
	cfg config
	dir string
}

// target returns a valid target named Prefix+name with a fresh 16 MiB
// sparse backing file.
func (s *suite) target(name string) target.Target {
	s.t.Helper()
	return target.Target{
		IQN:         Prefix + name,
		BackingPath: s.backing(name, 16<<20),
		SizeBytes:   16 << 20,
		Initiators:  []string{"iqn.2026-11.io.sanboot.targettest:initiator." + name},
		Portals:     slices.Clone(s.cfg.portals),
		Serial:      target.Serial("targettest", name),
	}
}

func (s *suite) backing(name string, size int64) string {
	s.t.Helper()
	if s.cfg.backing != nil {
		return s.cfg.backing.Make(s.t, name, size)
	}
	p := filepath.Join(s.dir, fmt.Sprintf("%s-%d.raw", name, size))
	f, err := os.Create(p)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *suite) ensure(tg target.Target) {
	s.t.Helper()
	if err := s.d.Ensure(context.Background(), tg); err != nil {
		s.t.Fatalf("Ensure(%v): %v", tg, err)
	}
}

// list returns the suite's targets as the driver reports them.
func (s *suite) list() []target.Target {
	s.t.Helper()
	all, err := s.d.List(context.Background())
	if err != nil {
		s.t.Fatalf("List: %v", err)
	}
	var out []target.Target
	var iqns []string
	for i, tg := range all {
		if i > 0 && all[i-1].IQN >= tg.IQN {
			s.t.Errorf("List is not sorted by IQN: %s before %s", all[i-1].IQN, tg.IQN)
		}
		iqns = append(iqns, tg.IQN)
		if strings.HasPrefix(tg.IQN, Prefix) {
			out = append(out, tg)
		}
	}
	// A driver that names its targets more cheaply names the same ones.
	if n, ok := s.d.(target.Namer); ok {
		names, err := n.Names(context.Background())
		if err != nil {
			s.t.Fatalf("Names: %v", err)
		}
		if !slices.Equal(names, iqns) {
			s.t.Errorf("Names = %q, List has %q", names, iqns)
		}
	}
	return out
}

// expect checks that the driver serves exactly want (of the suite's targets).
func (s *suite) expect(want ...target.Target) {
	s.t.Helper()
	got := s.list()
	if len(got) != len(want) {
		s.t.Fatalf("List has %d targets %v, want %d %v", len(got), got, len(want), want)
	}
	want = slices.Clone(want)
	slices.SortFunc(want, func(a, b target.Target) int { return strings.Compare(a.IQN, b.IQN) })
	for i := range want {
		if !target.SameConfig(got[i], want[i]) {
			s.t.Errorf("List[%d] = %v\nwant        %v", i, got[i], want[i])
		}
		if got[i].LUN != s.d.LUN() {
			s.t.Errorf("List[%d].LUN = %d, driver's LUN() = %d", i, got[i].LUN, s.d.LUN())
		}
	}
}

func (s *suite) cleanup() {
	all, err := s.d.List(context.Background())
	if err != nil {
		s.t.Errorf("cleanup: List: %v", err)
		return
	}
	for _, tg := range all {
		if strings.HasPrefix(tg.IQN, Prefix) {
			if err := s.d.Delete(context.Background(), tg.IQN); err != nil {
				s.t.Errorf("cleanup: Delete(%s): %v", tg.IQN, err)
			}
		}
	}
}

func chap(user, secret string) *target.CHAP {
	return &target.CHAP{Incoming: target.Credentials{User: user, Secret: target.NewSecret(secret)}}
}

func testEnsureCreates(t *testing.T, s *suite) {
	s.expect()
	a := s.target("a")
	s.ensure(a)
	s.expect(a)
}

func testEnsureTwice(t *testing.T, s *suite) {
	a := s.target("a")
	a.CHAP = chap("user-a", "secret-a-0123456")
	s.ensure(a)
	first := s.list()
	s.ensure(a)
	second := s.list()
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("after Ensure twice: %d then %d targets, want 1 and 1", len(first), len(second))
	}
	if !target.SameConfig(first[0], second[0]) || first[0].LUN != second[0].LUN {
		t.Errorf("second Ensure changed the target:\n%v\n%v", first[0], second[0])
	}
	s.expect(a)
}

func testConvergesACL(t *testing.T, s *suite) {
	a := s.target("a")
	s.ensure(a)
	b := a
	b.Initiators = []string{"iqn.2026-11.io.sanboot.targettest:other", "iqn.2026-11.io.sanboot.targettest:third"}
	s.ensure(b)
	s.expect(b)
	s.ensure(a)
	s.expect(a)
}

func testConvergesCHAP(t *testing.T, s *suite) {
	a := s.target("a")
	s.ensure(a)
	steps := []*target.CHAP{
		chap("user-a", "secret-a-0123456"),
		{Incoming: target.Credentials{User: "user-a", Secret: target.NewSecret("secret-a-0123456")},
			Mutual: &target.Credentials{User: "target-a", Secret: target.NewSecret("mutual-a-0123456")}},
		chap("user-b", "secret-b-0123456"),
		nil,
	}
	for i, c := range steps {
		a.CHAP = c
		s.ensure(a)
		if t.Failed() {
			t.Fatalf("step %d", i)
		}
		s.expect(a)
	}
}

func testConvergesBacking(t *testing.T, s *suite) {
	a := s.target("a")
	s.ensure(a)
	a.BackingPath = s.backing("a-bigger", 32<<20)
	a.SizeBytes = 32 << 20
	s.ensure(a)
	s.expect(a)
}

func testDeleteIdempotent(t *testing.T, s *suite) {
	a, b := s.target("a"), s.target("b")
	s.ensure(a)
	s.ensure(b)
	ctx := context.Background()
	for i := range 2 {
		if err := s.d.Delete(ctx, a.IQN); err != nil {
			t.Fatalf("Delete #%d of %s: %v", i+1, a.IQN, err)
		}
		s.expect(b)
	}
	if err := s.d.Delete(ctx, Prefix+"never-existed"); err != nil {
		t.Fatalf("Delete of a target that never existed: %v, want nil", err)
	}
	if s.cfg.backing != nil {
		if !s.cfg.backing.Exists(t, a.BackingPath) {
			t.Errorf("Delete removed the backing disk %s", a.BackingPath)
		}
	} else if _, err := os.Stat(a.BackingPath); err != nil {
		t.Errorf("Delete touched the backing file: %v", err)
	}
	s.expect(b)
}

func testListReflects(t *testing.T, s *suite) {
	var ts []target.Target
	for _, n := range []string{"c", "a", "b"} {
		tg := s.target(n)
		s.ensure(tg)
		ts = append(ts, tg)
	}
	s.expect(ts...)
	if err := s.d.Delete(context.Background(), Prefix+"a"); err != nil {
		t.Fatal(err)
	}
	s.expect(ts[0], ts[2])
}

func testInvalidInput(t *testing.T, s *suite) {
	good := s.target("good")
	s.ensure(good)
	cases := []struct {
		name   string
		mutate func(*target.Target)
	}{
		{"bad IQN", func(tg *target.Target) { tg.IQN = "iqn.2026-11.io.sanboot.targettest:Bad Name" }},
		{"empty IQN", func(tg *target.Target) { tg.IQN = "" }},
		{"bad initiator", func(tg *target.Target) { tg.Initiators = []string{"node-01"} }},
		{"no initiators", func(tg *target.Target) { tg.Initiators = nil }},
		{"duplicate initiators", func(tg *target.Target) { tg.Initiators = []string{tg.Initiators[0], tg.Initiators[0]} }},
		{"bad portal", func(tg *target.Target) { tg.Portals = []string{"localhost:3260"} }},
		{"no portals", func(tg *target.Target) { tg.Portals = nil }},
		{"relative backing path", func(tg *target.Target) { tg.BackingPath = "disks/a.raw" }},
		{"backing path with comma", func(tg *target.Target) { tg.BackingPath = "/tmp/a,fd_dev_size=1" }},
		{"rbd backing without image", func(tg *target.Target) { tg.BackingPath = "rbd:pool" }},
		{"rbd backing with a snapshot", func(tg *target.Target) { tg.BackingPath = "rbd:pool/img@snap" }},
		{"rbd backing with bsopts", func(tg *target.Target) { tg.BackingPath = "rbd:pool/img;conf=/x" }},
		{"zero size", func(tg *target.Target) { tg.SizeBytes = 0 }},
		{"size not a multiple of 512", func(tg *target.Target) { tg.SizeBytes = 1000 }},
		{"bad serial", func(tg *target.Target) { tg.Serial = "has space" }},
		{"empty serial", func(tg *target.Target) { tg.Serial = "" }},
		{"short CHAP secret", func(tg *target.Target) { tg.CHAP = chap("user", "short") }},
		{"bad CHAP user", func(tg *target.Target) { tg.CHAP = chap("a user", "secret-0123456789") }},
		{"same secret both ways", func(tg *target.Target) {
			tg.CHAP = chap("user", "secret-0123456789")
			tg.CHAP.Mutual = &target.Credentials{User: "target", Secret: target.NewSecret("secret-0123456789")}
		}},
	}
	for _, tc := range cases {
		for _, existing := range []bool{false, true} {
			tg := s.target("new")
			if existing {
				tg = good
				tg.Initiators = []string{"iqn.2026-11.io.sanboot.targettest:changed"}
			}
			tc.mutate(&tg)
			if err := s.d.Ensure(context.Background(), tg); err == nil {
				t.Errorf("%s (existing=%v): Ensure accepted %v", tc.name, existing, tg)
			}
			s.expect(good)
		}
	}
	if err := s.d.Delete(context.Background(), "not an iqn"); err == nil {
		t.Errorf("Delete accepted an invalid IQN")
	}
	s.expect(good)
}

func testCanceled(t *testing.T, s *suite) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.d.Ensure(ctx, s.target("a")); err == nil {
		t.Errorf("Ensure with a canceled context returned nil")
	}
	s.expect()
}

func testSecretsNeverPrinted(t *testing.T, s *suite) {
	const in, mutual = "incoming-SECRET-1234", "mutual-SECRET-5678"
	a := s.target("a")
	a.CHAP = chap("user-a", in)
	a.CHAP.Mutual = &target.Credentials{User: "target-a", Secret: target.NewSecret(mutual)}
	s.ensure(a)
	listed := s.list()

	var texts []string
	for _, v := range []any{a, &a, *a.CHAP, a.CHAP, a.CHAP.Incoming, a.CHAP.Incoming.Secret, listed,
		struct{ hidden target.Target }{a}, map[string]target.Target{"a": a}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			texts = append(texts, fmt.Sprintf(verb, v))
		}
	}
	texts = append(texts, a.String(), a.CHAP.String())
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("target", "t", a, "chap", a.CHAP, "secret", a.CHAP.Incoming.Secret, "listed", listed)
	}
	texts = append(texts, logs.String())
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	texts = append(texts, string(js))
	// An error about some other field must not quote the secret either.
	bad := a
	bad.Portals = []string{"nowhere"}
	if err := s.d.Ensure(context.Background(), bad); err == nil {
		t.Fatalf("Ensure accepted an invalid portal")
	} else {
		texts = append(texts, err.Error())
	}
	bad = a
	bad.CHAP = chap("user-a", "tiny"+in[:4]) // too short: the error names the length only
	if err := s.d.Ensure(context.Background(), bad); err == nil {
		t.Fatalf("Ensure accepted a short secret")
	} else if strings.Contains(err.Error(), "tiny") {
		t.Errorf("error quotes a secret: %v", err)
	}
	for _, text := range texts {
		for _, secret := range []string{in, mutual, fmt.Sprintf("%x", in)} {
			if strings.Contains(text, secret) {
				t.Errorf("secret printed in %q", text)
			}
		}
	}
	if !strings.Contains(a.String(), "user-a") {
		t.Errorf("String() = %q, want the CHAP user name in it", a.String())
	}
	if a.CHAP.Incoming.Secret.Reveal() != in {
		t.Errorf("Reveal() does not return the secret")
	}
}

func testSessionsNone(t *testing.T, s *suite) {
	ctx := context.Background()
	a := s.target("a")
	s.ensure(a)
	if got, err := s.d.Sessions(ctx, a.IQN); err != nil || len(got) != 0 {
		t.Errorf("Sessions of a target nobody logged in to = %v, %v; want none", got, err)
	}
	if got, err := s.d.Sessions(ctx, Prefix+"never-existed"); err != nil || len(got) != 0 {
		t.Errorf("Sessions of a missing target = %v, %v; want none and no error", got, err)
	}
	if _, err := s.d.Sessions(ctx, "not an iqn"); err == nil {
		t.Errorf("Sessions accepted an invalid IQN")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.d.Sessions(canceled, a.IQN); err == nil {
		t.Errorf("Sessions with a canceled context returned no error")
	}
	sr, ok := s.d.(target.SessionReporter)
	if !ok {
		return
	}
	b := s.target("b")
	if got, err := sr.EnsureSessions(ctx, b); err != nil || len(got) != 0 {
		t.Errorf("EnsureSessions creating a target = %v, %v; want none", got, err)
	}
	if got, err := sr.EnsureSessions(ctx, a); err != nil || len(got) != 0 {
		t.Errorf("EnsureSessions of a target nobody logged in to = %v, %v; want none", got, err)
	}
	if all, err := sr.ListSessions(ctx); err != nil || len(all[a.IQN]) != 0 || len(all[b.IQN]) != 0 {
		t.Errorf("ListSessions with nobody logged in = %v, %v; want none for %s and %s", all, err, a.IQN, b.IQN)
	}
	if _, err := sr.ListSessions(canceled); err == nil {
		t.Errorf("ListSessions with a canceled context returned no error")
	}
	if _, err := sr.EnsureSessions(canceled, a); err == nil {
		t.Errorf("EnsureSessions with a canceled context returned no error")
	}
	s.expect(a, b)
}

func testSessionsLogin(t *testing.T, s *suite) {
	a, b := s.target("a"), s.target("b")
	s.ensure(a)
	s.ensure(b)
	logout := s.cfg.login(t, s.d, a)
	in := a.Initiators[0]
	got := s.waitSessions(a.IQN, "the initiator's session", func(got []target.Session) bool { return len(got) > 0 })
	if len(got) != 1 || got[0].Initiator != in {
		t.Fatalf("Sessions after %s logged in = %v; want that one initiator", in, got)
	}
	if _, err := netip.ParseAddr(got[0].Address); err != nil {
		t.Errorf("Sessions gives address %q for %s: %v; want the initiator's IP address", got[0].Address, in, err)
	}
	if other, err := s.d.Sessions(context.Background(), b.IQN); err != nil || len(other) != 0 {
		t.Errorf("Sessions of another target = %v, %v; want none", other, err)
	}
	if sr, ok := s.d.(target.SessionReporter); ok {
		// Converging a target someone is logged in to says who.
		if again, err := sr.EnsureSessions(context.Background(), a); err != nil || !slices.Equal(again, got) {
			t.Errorf("EnsureSessions of the target %s is logged in to = %v, %v; want %v", in, again, err, got)
		}
		if again, err := sr.EnsureSessions(context.Background(), b); err != nil || len(again) != 0 {
			t.Errorf("EnsureSessions of another target = %v, %v; want none", again, err)
		}
		all, err := sr.ListSessions(context.Background())
		if err != nil || !slices.Equal(all[a.IQN], got) || len(all[b.IQN]) != 0 {
			t.Errorf("ListSessions = %v, %v; want %v for %s and none for %s", all, err, got, a.IQN, b.IQN)
		}
	}
	logout()
	s.waitSessions(a.IQN, "the session to end", func(got []target.Session) bool { return len(got) == 0 })
	s.expect(a, b)
}

// waitSessions polls Sessions(iqn) until ok holds or a generous deadline
// passes (a login or logout reaches the target system asynchronously).
func (s *suite) waitSessions(iqn, what string, ok func([]target.Session) bool) []target.Session {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, err := s.d.Sessions(context.Background(), iqn)
		if err != nil {
			s.t.Fatalf("Sessions(%s): %v", iqn, err)
		}
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s: Sessions(%s) = %v", what, iqn, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
