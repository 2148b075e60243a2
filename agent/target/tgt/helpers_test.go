package tgt_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/agent/target/tgt"
	"github.com/sanboot/sanboot/internal/tgttest"
)

// requireRealTgt fails the test unless it can run a real tgtd and the
// libiscsi tools: it never skips.
func requireRealTgt(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test runs a real tgtd, which needs root: run go test as root")
	}
	for _, tool := range []string{"tgtd", "tgtadm", "iscsi-inq", "iscsi-readcapacity16", "iscsi-ls", "iscsi-perf"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (%v): install Debian's tgt and libiscsi-bin packages (apt-get install tgt libiscsi-bin)", tool, err)
		}
	}
}

// startTgtd starts a private tgtd on n random loopback portals and a random
// control port, stopped when the test ends; opts change its configuration.
func startTgtd(t *testing.T, n int, opts ...func(*tgt.ManagedConfig)) (*tgt.Managed, []string) {
	t.Helper()
	requireRealTgt(t)
	cfg := tgt.ManagedConfig{Log: testLog(t)}
	for _, o := range opts {
		o(&cfg)
	}
	return tgttest.Start(t, n, cfg)
}

// testLog logs through t.Log, tgtd's output (debug) included.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// backing creates a sparse file of size bytes.
func backing(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

const testPrefix = "iqn.2026-11.io.sanboot.tgttest:"

func newTarget(t *testing.T, name, portal string) target.Target {
	return target.Target{
		IQN:         testPrefix + name,
		BackingPath: backing(t, name+".raw", 64<<20),
		SizeBytes:   64 << 20,
		Initiators:  []string{testPrefix + "initiator." + name},
		Portals:     []string{portal},
		Serial:      target.Serial("tgttest", name),
	}
}

// initiator is a libiscsi login as one initiator name, with optional CHAP.
type initiator struct {
	name           string
	user, secret   string // CHAP
	tuser, tsecret string // mutual CHAP: what the target must prove
	portal, iqn    string
	lun            int
}

// run runs a libiscsi tool against the initiator's LUN. CHAP credentials go
// through the environment (libiscsi's URL cannot carry ':' in user names).
func (in initiator) run(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "iscsi://" + in.portal + "/" + in.iqn + "/" + strconv.Itoa(in.lun)
	if tool == "iscsi-ls" {
		url = "iscsi://" + in.portal
	}
	cmd := exec.CommandContext(ctx, tool, append(append([]string{"-i", in.name}, args...), url)...)
	cmd.Env = in.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// env is the environment that gives libiscsi the CHAP credentials.
func (in initiator) env() []string {
	env := os.Environ()
	if in.user != "" {
		env = append(env, "LIBISCSI_CHAP_USERNAME="+in.user, "LIBISCSI_CHAP_PASSWORD="+in.secret)
	}
	if in.tuser != "" {
		env = append(env, "LIBISCSI_CHAP_TARGET_USERNAME="+in.tuser, "LIBISCSI_CHAP_TARGET_PASSWORD="+in.tsecret)
	}
	return env
}

// canLogIn reports whether iscsi-inq logs in and gets an answer.
func (in initiator) canLogIn(t *testing.T) bool {
	t.Helper()
	out, err := in.run(t, "iscsi-inq")
	if err == nil && !strings.Contains(out, "Peripheral Device Type:DIRECT_ACCESS") {
		t.Fatalf("iscsi-inq succeeded without a disk in its answer: %s", out)
	}
	return err == nil
}

// tgtadmShow returns tgtd's target list as tgtadm prints it.
func tgtadmShow(t *testing.T, controlPort int, mode string) string {
	t.Helper()
	out, err := exec.Command("tgtadm", "-C", strconv.Itoa(controlPort), "--lld", "iscsi", "--mode", mode, "--op", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("tgtadm %s show: %v: %s", mode, err, out)
	}
	return string(out)
}

// tgtadmRun runs tgtadm directly (to make state the driver did not).
func tgtadmRun(t *testing.T, controlPort int, args ...string) {
	t.Helper()
	out, err := exec.Command("tgtadm", append([]string{"-C", strconv.Itoa(controlPort), "--lld", "iscsi"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tgtadm %v: %v: %s", args, err, out)
	}
}

func accountsOf(t *testing.T, controlPort int) []string {
	t.Helper()
	var users []string
	for _, line := range strings.Split(tgtadmShow(t, controlPort, "account"), "\n") {
		if strings.HasPrefix(line, " ") {
			users = append(users, strings.TrimSpace(line))
		}
	}
	return users
}
