package tgt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/agent/target/targettest"
	"github.com/sanboot/sanboot/agent/target/tgt"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/tgttest"
)

func TestConformance(t *testing.T) {
	m, portals := startTgtd(t, 1)
	targettest.Run(t, func(t *testing.T) target.Driver { return m.Driver() }, targettest.WithPortals(portals...),
		targettest.WithLogin(func(t *testing.T, d target.Driver, tg target.Target) func() {
			return holdSession(t, m.ControlPort(), initiator{name: tg.Initiators[0], portal: tg.Portals[0], iqn: tg.IQN, lun: d.LUN()})
		}))
}

func chap(user, secret string) *target.CHAP {
	return &target.CHAP{Incoming: target.Credentials{User: user, Secret: target.NewSecret(secret)}}
}

func TestRealInitiatorACL(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	ctx := context.Background()
	tg := newTarget(t, "acl", portals[0])
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	right := initiator{name: tg.Initiators[0], portal: portals[0], iqn: tg.IQN, lun: d.LUN()}
	wrong := right
	wrong.name = testPrefix + "initiator.intruder"

	if !right.canLogIn(t) {
		out, err := right.run(t, "iscsi-inq")
		t.Fatalf("the allowed initiator cannot log in: %v: %s", err, out)
	}
	if wrong.canLogIn(t) {
		t.Errorf("an initiator outside the ACL logged in")
	}
	out, err := right.run(t, "iscsi-readcapacity16", "-s")
	if err != nil || strings.TrimSpace(out) != strconv.FormatInt(tg.SizeBytes, 10) {
		t.Errorf("iscsi-readcapacity16 -s = %q, %v; want the backing file's size %d", out, err, tg.SizeBytes)
	}
	out, err = right.run(t, "iscsi-inq", "-e", "1", "-c", "128") // VPD 0x80: unit serial number
	if err != nil || !strings.Contains(out, tg.Serial+"]") {
		t.Errorf("VPD unit serial page = %q, %v; want serial %s", out, err, tg.Serial)
	}
	out, err = right.run(t, "iscsi-inq", "-e", "1", "-c", "178") // VPD 0xb2: logical block provisioning
	if err != nil || !strings.Contains(out, "lbpu:1") {
		t.Errorf("VPD provisioning page = %q, %v; want lbpu:1 (thin provisioning, UNMAP)", out, err)
	}
	out, err = right.run(t, "iscsi-ls")
	if err != nil || !strings.Contains(out, "Target:"+tg.IQN) {
		t.Errorf("discovery as the allowed initiator = %q, %v; want the target", out, err)
	}
	out, err = wrong.run(t, "iscsi-ls")
	if strings.Contains(out, tg.IQN) {
		t.Errorf("discovery as another initiator shows the target: %q, %v", out, err)
	}

	// An ALL bind made behind the driver's back is removed; the ACL follows the spec.
	tgtadmRun(t, m.ControlPort(), "--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")
	if !wrong.canLogIn(t) {
		t.Fatalf("test setup: ALL did not open the target")
	}
	tg.Initiators = []string{wrong.name}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if !wrong.canLogIn(t) || right.canLogIn(t) {
		t.Errorf("after moving the ACL to %s: it cannot log in, or %s still can", wrong.name, right.name)
	}
	if show := tgtadmShow(t, m.ControlPort(), "target"); strings.Contains(show, "        ALL\n") {
		t.Errorf("Ensure left an ALL bind:\n%s", show)
	}
}

func TestRealInitiatorCHAP(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	ctx := context.Background()
	tg := newTarget(t, "chap", portals[0])
	user := tg.Initiators[0] // an IQN as CHAP user: unique per node
	tg.CHAP = chap(user, "incoming-secret-1")
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	base := initiator{name: tg.Initiators[0], portal: portals[0], iqn: tg.IQN, lun: d.LUN()}
	with := func(user, secret, tuser, tsecret string) initiator {
		in := base
		in.user, in.secret, in.tuser, in.tsecret = user, secret, tuser, tsecret
		return in
	}
	check := func(step string, in initiator, want bool) {
		t.Helper()
		if got := in.canLogIn(t); got != want {
			t.Errorf("%s: login as %q/%q (target %q) = %v, want %v", step, in.user, in.secret, in.tuser, got, want)
		}
	}
	check("CHAP on, no credentials", base, false)
	check("CHAP on, wrong secret", with(user, "incoming-secret-X", "", ""), false)
	check("CHAP on, right secret", with(user, "incoming-secret-1", "", ""), true)

	tg.CHAP.Mutual = &target.Credentials{User: tg.IQN, Secret: target.NewSecret("mutual-secret-01")}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	check("mutual, right", with(user, "incoming-secret-1", tg.IQN, "mutual-secret-01"), true)
	check("mutual, target's secret wrong", with(user, "incoming-secret-1", tg.IQN, "mutual-secret-XX"), false)

	// A new secret for the same user: tgtd cannot tell its secrets, the
	// driver remembers what it set and replaces the account.
	tg.CHAP.Incoming.Secret = target.NewSecret("incoming-secret-2")
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	check("new secret, old one", with(user, "incoming-secret-1", "", ""), false)
	check("new secret", with(user, "incoming-secret-2", tg.IQN, "mutual-secret-01"), true)

	// An agent restart: a new driver does not know the secrets and sets them
	// once more; the target stays usable.
	d2 := m.Driver()
	if err := d2.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	check("after a driver restart", with(user, "incoming-secret-2", tg.IQN, "mutual-secret-01"), true)
	if show := tgtadmShow(t, m.ControlPort(), "target"); strings.Count(show, user) != 2 { // ACL + account
		t.Errorf("want the user once as account and once in the ACL:\n%s", show)
	}

	// CHAP off: open to the ACL again, and sanboot's accounts are gone.
	tg.CHAP = nil
	if err := d2.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	check("CHAP off", base, true)
	if acc := accountsOf(t, m.ControlPort()); len(acc) != 0 {
		t.Errorf("accounts left after CHAP was turned off: %q", acc)
	}
}

func TestAccountsOfOthersAreLeftAlone(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	ctx := context.Background()
	cp := m.ControlPort()
	// Someone else's target with its CHAP account, and a spare account.
	other := backing(t, "other.raw", 1<<20)
	tgtadmRun(t, cp, "--mode", "target", "--op", "new", "--tid", "5", "--targetname", "iqn.2001-04.com.example:other")
	tgtadmRun(t, cp, "--mode", "logicalunit", "--op", "new", "--tid", "5", "--lun", "1", "--backing-store", other)
	tgtadmRun(t, cp, "--mode", "account", "--op", "new", "--user", "admin", "--password", "admin-secret-123")
	tgtadmRun(t, cp, "--mode", "account", "--op", "bind", "--tid", "5", "--user", "admin")
	tgtadmRun(t, cp, "--mode", "account", "--op", "new", "--user", "spare", "--password", "spare-secret-123")

	tg := newTarget(t, "own", portals[0])
	for _, u := range []string{"admin", "spare"} {
		tg.CHAP = chap(u, "sanboot-secret-1")
		err := d.Ensure(ctx, tg)
		if !errors.Is(err, tgt.ErrAccountConflict) {
			t.Errorf("Ensure with CHAP user %q (someone else's account) = %v, want ErrAccountConflict", u, err)
		}
	}
	if got, _ := d.List(ctx); slices.ContainsFunc(got, func(x target.Target) bool { return x.IQN == tg.IQN }) {
		t.Errorf("a refused Ensure created the target: %v", got)
	}
	tg.CHAP = chap("own-user", "sanboot-secret-1")
	tg.CHAP.Mutual = &target.Credentials{User: "own-mutual", Secret: target.NewSecret("sanboot-secret-2")}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, tg.IQN); err != nil {
		t.Fatal(err)
	}
	acc := accountsOf(t, cp)
	slices.Sort(acc)
	if !slices.Equal(acc, []string{"admin", "spare"}) {
		t.Errorf("accounts after Delete = %q, want exactly the foreign ones [admin spare]", acc)
	}
	show := tgtadmShow(t, cp, "target")
	if !strings.Contains(show, "iqn.2001-04.com.example:other") || !strings.Contains(show, "        admin\n") {
		t.Errorf("the foreign target or its account binding changed:\n%s", show)
	}
}

// holdSession logs in as in and keeps the session busy until the returned
// stop function is called.
func holdSession(t *testing.T, controlPort int, in initiator) (stop func()) {
	t.Helper()
	url := "iscsi://" + in.portal + "/" + in.iqn + "/" + strconv.Itoa(in.lun)
	cmd := exec.Command("iscsi-perf", "-i", in.name, "-m", "1", "-b", "8", url)
	cmd.Env = in.env()
	out, err := os.Create(filepath.Join(t.TempDir(), "iscsi-perf.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		// iscsi-perf ignores SIGINT while it reconnects to a gone target.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
	}
	t.Cleanup(stop)
	waitSession(t, controlPort, in)
	return stop
}

// waitSession waits until tgtd lists a session of in.
func waitSession(t *testing.T, controlPort int, in initiator) {
	t.Helper()
	eventually.True(t, "the initiator's session", func() bool {
		return strings.Contains(tgtadmShow(t, controlPort, "target"), "Initiator: "+in.name+" ")
	})
}

func TestLoggedInNodeKeepsItsDisk(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	ctx := context.Background()
	tg := newTarget(t, "busy", portals[0])
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	in := initiator{name: tg.Initiators[0], portal: portals[0], iqn: tg.IQN, lun: d.LUN()}
	stop := holdSession(t, m.ControlPort(), in)

	moved := tg
	moved.BackingPath = backing(t, "busy-2.raw", 32<<20)
	moved.SizeBytes = 32 << 20
	err := d.Ensure(ctx, moved)
	if !errors.Is(err, tgt.ErrLoggedIn) || !strings.Contains(err.Error(), in.name) {
		t.Fatalf("Ensure swapping the disk of a logged-in node = %v; want an error naming the logged-in initiator", err)
	}
	reserial := tg
	reserial.Serial = "other-serial"
	if err := d.Ensure(ctx, reserial); err == nil || !strings.Contains(err.Error(), "logged in") {
		t.Errorf("Ensure changing the serial under a logged-in node = %v; want a refusal", err)
	}
	got, _ := d.List(ctx)
	if len(got) != 1 || got[0].BackingPath != tg.BackingPath || got[0].Serial != tg.Serial {
		t.Errorf("refused Ensures changed the target: %v", got)
	}
	// What can change under a session does.
	acl := tg
	acl.Initiators = append(slices.Clone(tg.Initiators), testPrefix+"initiator.second")
	if err := d.Ensure(ctx, acl); err != nil {
		t.Errorf("ACL change with a logged-in node: %v", err)
	}
	// A disk swap that must wait does not hold the ACL back.
	moved.Initiators = []string{tg.Initiators[0], testPrefix + "initiator.third"}
	if err := d.Ensure(ctx, moved); err == nil || !strings.Contains(err.Error(), "logged in") {
		t.Errorf("Ensure swapping the disk of a logged-in node = %v; want a refusal", err)
	}
	if show := tgtadmShow(t, m.ControlPort(), "target"); !strings.Contains(show, "initiator.third") || strings.Contains(show, "initiator.second") {
		t.Errorf("the ACL did not converge beside the refused disk swap:\n%s", show)
	}

	stop()
	eventually.True(t, "the session to end", func() bool {
		return !strings.Contains(tgtadmShow(t, m.ControlPort(), "target"), "Initiator: "+in.name+" ")
	})
	if err := d.Ensure(ctx, moved); err != nil {
		t.Fatalf("Ensure after the node logged out: %v", err)
	}
	out, err := in.run(t, "iscsi-readcapacity16", "-s")
	if err != nil || strings.TrimSpace(out) != strconv.FormatInt(moved.SizeBytes, 10) {
		t.Errorf("readcapacity after the swap = %q, %v; want %d", out, err, moved.SizeBytes)
	}

	// Delete tears a busy target down (dropping the session).
	holdSession(t, m.ControlPort(), in)
	if err := d.Delete(ctx, tg.IQN); err != nil {
		t.Fatalf("Delete of a target with a busy session: %v", err)
	}
	if got, _ := d.List(ctx); len(got) != 0 {
		t.Errorf("after Delete: %v", got)
	}
}

func TestEnsureRefusesUnservedPortal(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	tg := newTarget(t, "portal", portals[0])
	tg.Portals = append(tg.Portals, tgttest.FreePortal(t))
	err := d.Ensure(context.Background(), tg)
	if err == nil || !strings.Contains(err.Error(), "does not serve portal") || !strings.Contains(err.Error(), tg.Portals[1]) {
		t.Fatalf("Ensure with a portal tgtd does not serve = %v; want an error naming it", err)
	}
	if got, _ := d.List(context.Background()); len(got) != 0 {
		t.Errorf("the refused Ensure created %v", got)
	}
}

func TestEnsureChecksTheBackingFile(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	tg := newTarget(t, "file", portals[0])
	tg.SizeBytes = 128 << 20
	if err := d.Ensure(context.Background(), tg); err == nil || !strings.Contains(err.Error(), "is 67108864 bytes") {
		t.Errorf("Ensure with a size that is not the file's = %v; want an error", err)
	}
	tg = newTarget(t, "missing", portals[0])
	tg.BackingPath += ".gone"
	if err := d.Ensure(context.Background(), tg); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Ensure with a missing file = %v; want ErrNotExist", err)
	}
}

func TestManagedTwoPortals(t *testing.T) {
	m, portals := startTgtd(t, 2)
	d := m.Driver()
	ctx := context.Background()
	tg := newTarget(t, "two", portals[0])
	tg.Portals = slices.Clone(portals)
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	for _, p := range portals {
		in := initiator{name: tg.Initiators[0], portal: p, iqn: tg.IQN, lun: d.LUN()}
		if !in.canLogIn(t) {
			t.Errorf("cannot log in through portal %s", p)
		}
	}
	got, err := d.List(ctx)
	if err != nil || len(got) != 1 || !target.SameConfig(got[0], tg) {
		t.Errorf("List = %v, %v; want %v", got, err, tg)
	}
}

func TestManagedStop(t *testing.T) {
	requireRealTgt(t)
	portal := tgttest.FreePortal(t)
	ctx := context.Background()
	m, err := tgt.StartManaged(ctx, tgt.ManagedConfig{ControlPort: tgttest.FreeControlPort(t), Portals: []string{portal}, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(ctx) }) // if the test fails before its own Stop
	d := m.Driver()
	tg := newTarget(t, "stop", portal)
	tg.CHAP = chap("stop-user", "stop-secret-123")
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	in := initiator{name: tg.Initiators[0], user: "stop-user", secret: "stop-secret-123", portal: portal, iqn: tg.IQN, lun: d.LUN()}
	stop := holdSession(t, m.ControlPort(), in)
	defer stop()
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop with a busy target: %v", err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Stop returned before tgtd exited")
	}
	if err := syscall.Kill(m.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("tgtd pid %d still exists after Stop (kill -0: %v)", m.PID(), err)
	}
	sock := filepath.Join(tgt.SocketDir, "socket."+strconv.Itoa(m.ControlPort()))
	for _, p := range []string{sock, sock + ".lock"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
	if l, err := net.Listen("tcp", portal); err != nil {
		t.Errorf("portal %s still taken after Stop: %v", portal, err)
	} else {
		l.Close()
	}
	if err := m.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestManagedStartFailsClearly(t *testing.T) {
	requireRealTgt(t)
	ctx := context.Background()

	t.Run("portal taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cp := tgttest.FreeControlPort(t)
		m, err := tgt.StartManaged(ctx, tgt.ManagedConfig{ControlPort: cp, Portals: []string{l.Addr().String()}})
		if err == nil {
			m.Stop(ctx)
			t.Fatal("StartManaged on a taken portal succeeded")
		}
		if !strings.Contains(err.Error(), "is taken") {
			t.Errorf("error = %v; want it to say the portal is taken", err)
		}
		if _, err := os.Stat(filepath.Join(tgt.SocketDir, "socket."+strconv.Itoa(cp))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a tgtd control socket exists after the failed start (%v)", err)
		}
	})
	t.Run("tgtd not installed", func(t *testing.T) {
		_, err := tgt.StartManaged(ctx, tgt.ManagedConfig{ControlPort: tgttest.FreeControlPort(t), Portals: []string{tgttest.FreePortal(t)},
			Tgtd: "tgtd-not-installed-here"})
		if err == nil || !strings.Contains(err.Error(), "install Debian's tgt package") {
			t.Errorf("error = %v; want it to say to install Debian's tgt package", err)
		}
	})
	t.Run("control port in use", func(t *testing.T) {
		m, _ := startTgtd(t, 1)
		_, err := tgt.StartManaged(ctx, tgt.ManagedConfig{ControlPort: m.ControlPort(), Portals: []string{tgttest.FreePortal(t)}})
		if err == nil || !strings.Contains(err.Error(), "already answers on control port") {
			t.Errorf("error = %v; want it to say a tgtd already uses the control port", err)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		for _, cfg := range []tgt.ManagedConfig{
			{ControlPort: 0, Portals: []string{"127.0.0.1:3260"}},
			{ControlPort: tgt.MaxControlPort + 1, Portals: []string{"127.0.0.1:3260"}},
			{ControlPort: 7},
			{ControlPort: 7, Portals: []string{"localhost:3260"}},
			{ControlPort: 7, Portals: []string{"127.0.0.1:3260", "127.0.0.1:3260"}},
		} {
			if _, err := tgt.StartManaged(ctx, cfg); err == nil {
				t.Errorf("StartManaged(%+v) accepted a bad configuration", cfg)
			}
		}
	})
}

func TestNoTgtdSaysSo(t *testing.T) {
	if _, err := exec.LookPath("tgtadm"); err != nil {
		t.Fatalf("tgtadm not found (%v): install Debian's tgt package (apt-get install tgt)", err)
	}
	d := tgt.New(tgt.Config{ControlPort: tgttest.FreeControlPort(t), Log: testLog(t)})
	_, err := d.List(context.Background())
	var te *tgt.Error
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "no tgtd answers on control port") {
		t.Errorf("List without a tgtd = %v; want a *tgt.Error saying no tgtd answers", err)
	}
}

// tgtd 1.0.85 crashes at the next "--op show" when an incoming account
// other than the last one is unbound from a target. Extra accounts bound
// behind the driver's back, before and after its own, must go without that.
func TestIncomingAccountsRemovedWithoutCrashingTgtd(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	ctx := context.Background()
	cp := m.ControlPort()
	tg := newTarget(t, "slots", portals[0])
	tg.CHAP = chap("slots-user", "slots-secret-123")
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"extra1", "extra2"} {
		tgtadmRun(t, cp, "--mode", "account", "--op", "new", "--user", u, "--password", u+"-secret-123")
		tgtadmRun(t, cp, "--mode", "account", "--op", "bind", "--tid", "1", "--user", u)
	}
	// Slots: slots-user, extra1, extra2. The first is wanted and kept.
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	in := initiator{name: tg.Initiators[0], user: "slots-user", secret: "slots-secret-123", portal: portals[0], iqn: tg.IQN, lun: d.LUN()}
	if !in.canLogIn(t) {
		t.Errorf("the wanted CHAP user cannot log in")
	}
	got, err := d.List(ctx) // a show: tgtd must still be alive
	if err != nil || len(got) != 1 || !target.SameConfig(got[0], tg) {
		t.Fatalf("List = %v, %v; want %v", got, err, tg)
	}
	// Slots: extra3, slots-user (the wanted one is not first): all go, then it comes back.
	tg2 := tg
	tg2.CHAP = nil
	if err := d.Ensure(ctx, tg2); err != nil {
		t.Fatal(err)
	}
	tgtadmRun(t, cp, "--mode", "account", "--op", "new", "--user", "extra3", "--password", "extra3-secret-123")
	tgtadmRun(t, cp, "--mode", "account", "--op", "bind", "--tid", "1", "--user", "extra3")
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	got, err = d.List(ctx)
	if err != nil || len(got) != 1 || !target.SameConfig(got[0], tg) {
		t.Fatalf("List = %v, %v; want %v", got, err, tg)
	}
	if !in.canLogIn(t) {
		t.Errorf("the wanted CHAP user cannot log in")
	}
	select {
	case <-m.Done():
		t.Fatal("tgtd died")
	default:
	}
}

// TestManagedDiesWithItsParent runs StartManaged in a child process (this
// test binary again), kills the child with SIGKILL and checks that tgtd
// goes too: a crashed agent must not leave a tgtd holding its portals.
func TestManagedDiesWithItsParent(t *testing.T) {
	if os.Getenv("SANBOOT_TGT_HELPER") == "1" {
		return // run by TestHelperManagedChild's parent only
	}
	requireRealTgt(t)
	cp, portal := tgttest.FreeControlPort(t), tgttest.FreePortal(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperManagedChild$", "-test.v")
	cmd.Env = append(os.Environ(), "SANBOOT_TGT_HELPER=1", "SANBOOT_TGT_CP="+strconv.Itoa(cp), "SANBOOT_TGT_PORTAL="+portal)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := 0
	sc := bufio.NewScanner(stdout)
	for pid == 0 && sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "TGTD_PID="); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid == 0 {
		t.Fatalf("the child did not start tgtd (%v)", sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	eventually.True(t, "tgtd to die with its parent", func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	})
	// Its socket files stay behind (nobody is left to remove them); a new
	// tgtd starts on them all the same.
	m, err := tgt.StartManaged(context.Background(), tgt.ManagedConfig{ControlPort: cp, Portals: []string{portal}, Log: testLog(t)})
	if err != nil {
		t.Fatalf("tgtd after a crashed parent: %v", err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestHelperManagedChild is the child of TestManagedDiesWithItsParent.
func TestHelperManagedChild(t *testing.T) {
	if os.Getenv("SANBOOT_TGT_HELPER") != "1" {
		return // not a test of its own
	}
	cp, _ := strconv.Atoi(os.Getenv("SANBOOT_TGT_CP"))
	m, err := tgt.StartManaged(context.Background(), tgt.ManagedConfig{ControlPort: cp, Portals: []string{os.Getenv("SANBOOT_TGT_PORTAL")}})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("TGTD_PID=%d\n", m.PID())
	select {} // until killed
}

func TestStrayLUNUnderASessionIsRefused(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	ctx := context.Background()
	cp := m.ControlPort()
	tg := newTarget(t, "repair", portals[0])
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	in := initiator{name: tg.Initiators[0], portal: portals[0], iqn: tg.IQN, lun: d.LUN()}
	holdSession(t, cp, in)
	tgtadmRun(t, cp, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "2", "--backing-store", backing(t, "extra-lun.raw", 1<<20))
	tgtadmRun(t, cp, "--mode", "logicalunit", "--op", "update", "--tid", "1", "--lun", "1", "--params", "thin_provisioning=0")
	// The new LUN is a unit attention to the initiator, which may log in
	// again: the session must be there when Ensure looks.
	waitSession(t, cp, in)
	err := d.Ensure(ctx, tg)
	if err == nil || !strings.Contains(err.Error(), "remove LUN 2") {
		t.Fatalf("Ensure removing a stray LUN under a session = %v; want a refusal naming LUN 2", err)
	}
	show := tgtadmShow(t, cp, "target")
	if !strings.Contains(show, "Thin-provisioning: No") {
		t.Fatalf("test setup: thin provisioning is still on:\n%s", show)
	}
}

func TestEnsureRemovesStrayLUNsAndRestoresThin(t *testing.T) {
	m, portals := startTgtd(t, 1)
	d := m.Driver()
	ctx := context.Background()
	cp := m.ControlPort()
	tg := newTarget(t, "stray", portals[0])
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	tgtadmRun(t, cp, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "2", "--backing-store", backing(t, "extra-lun.raw", 1<<20))
	tgtadmRun(t, cp, "--mode", "logicalunit", "--op", "update", "--tid", "1", "--lun", "1", "--params", "thin_provisioning=0")
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	show := tgtadmShow(t, cp, "target")
	if strings.Contains(show, "LUN: 2") || strings.Contains(show, "/extra-lun.raw") {
		t.Errorf("the stray LUN 2 is still there:\n%s", show)
	}
	if strings.Count(show, "Thin-provisioning: Yes") != 1 {
		t.Errorf("LUN 1 is not thin provisioned again:\n%s", show)
	}
	got, err := d.List(ctx)
	if err != nil || len(got) != 1 || !target.SameConfig(got[0], tg) {
		t.Errorf("List = %v, %v; want %v", got, err, tg)
	}
}

// A burst of new targets is made from one listing of tgtd (two tgtadm
// calls fewer per target), and their sessions come with them (no listing
// each); a target someone else made meanwhile, at the
// target id that listing has free, does not stop the next one: Ensure
// lists tgtd again and converges. Every target ends up served as asked.
func TestNewTargetsFromOneListing(t *testing.T) {
	m, portals := startTgtd(t, 1)
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	bare, err := exec.LookPath("tgtadm")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "tgtadm")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\nexec " + bare + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := tgt.New(tgt.Config{ControlPort: m.ControlPort(), Tgtadm: wrapper, Log: testLog(t)})
	tgt.KeepListing(d, time.Hour)
	ctx := context.Background()
	var want []target.Target
	for i := range 3 {
		// As the reconciler asks: the target and who is logged in.
		tg := newTarget(t, fmt.Sprint("burst", i), portals[0])
		if sessions, err := d.EnsureSessions(ctx, tg); err != nil || len(sessions) != 0 {
			t.Fatalf("EnsureSessions of a new target = %v, %v; want none", sessions, err)
		}
		want = append(want, tg)
	}
	out, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	if shows := strings.Count(string(out), "--op show"); shows != 2 {
		t.Fatalf("%d show calls for 3 new targets, want 2 (targets and portals, once):\n%s", shows, out)
	}
	// Each new target: target new, LUN new, LUN update (serial, thin
	// provisioning), bind its initiator. Nothing else.
	if n := strings.Count(string(out), "\n"); n != 2+3*4 {
		t.Fatalf("%d tgtadm calls for 3 new targets, want 2 shows and 4 calls a target:\n%s", n, out)
	}

	// Behind the driver's back: a target at the next free tid.
	tgtadmRun(t, m.ControlPort(), "--lld", "iscsi", "--mode", "target", "--op", "new", "--tid", "4", "--targetname", testPrefix+"other")
	tg := newTarget(t, "burst3", portals[0])
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatalf("Ensure after a change behind the listing: %v", err)
	}
	if out, _ := os.ReadFile(calls); !strings.Contains(string(out), "--op new --tid 4 --targetname "+tg.IQN) {
		t.Fatalf("the driver did not try the tid its listing had free (the test proves nothing):\n%s", out)
	}
	want = append(want, tg)
	got, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		i := slices.IndexFunc(got, func(g target.Target) bool { return g.IQN == w.IQN })
		if i < 0 {
			t.Fatalf("target %s missing from %v", w.IQN, got)
		}
		g := got[i]
		if g.BackingPath != w.BackingPath || g.Serial != w.Serial || !slices.Equal(g.Initiators, w.Initiators) {
			t.Errorf("target %s is served as %+v, want %+v", w.IQN, g, w)
		}
	}
	in := initiator{name: tg.Initiators[0], portal: portals[0], iqn: tg.IQN, lun: d.LUN()}
	if !in.canLogIn(t) {
		t.Error("the target made after the change behind the listing does not let its initiator in")
	}
}
