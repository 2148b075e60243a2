package tgt_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sanboot/sanboot/agent/target/tgt"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/tgttest"
)

// A kept tgtd that is killed (-9) is started again: Problem says so in the
// meantime, the target is gone, the driver builds it again on the new tgtd
// and a real initiator logs in to it.
func TestKeeperRestartsAKilledTgtd(t *testing.T) {
	requireRealTgt(t)
	portal := tgttest.FreePortal(t)
	ctx := context.Background()
	var changes atomic.Int32
	k := keep(t, tgt.ManagedConfig{ControlPort: tgttest.FreeControlPort(t), Portals: []string{portal}, Log: testLog(t)}, func() { changes.Add(1) })
	d := k.Driver()
	tg := newTarget(t, "kept", portal)
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	in := initiator{name: tg.Initiators[0], portal: portal, iqn: tg.IQN, lun: d.LUN()}
	if !in.canLogIn(t) {
		t.Fatal("cannot log in before the kill")
	}

	old := k.PID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "a tgtd started again", func() bool { return k.Restarts() == 1 && k.PID() != old && k.Problem() == nil })
	if changes.Load() < 2 {
		t.Errorf("changed was called %d times: want the death and the restart", changes.Load())
	}
	l, err := d.List(ctx)
	if err != nil || len(l) != 0 {
		t.Fatalf("targets on the new tgtd: %v, %v; want none (they died with the old one)", l, err)
	}
	if err := d.Ensure(ctx, tg); err != nil {
		t.Fatalf("Ensure on the new tgtd: %v", err)
	}
	if !in.canLogIn(t) {
		t.Fatal("cannot log in after the restart and rebuild")
	}
}

// While tgtd cannot start again, Problem says why; once it can, it runs.
func TestKeeperSaysWhyTgtdCannotStart(t *testing.T) {
	requireRealTgt(t)
	real, err := exec.LookPath("tgtd")
	if err != nil {
		t.Fatal(err)
	}
	// The real tgtd, unless the test holds it back.
	dir := t.TempDir()
	hold := filepath.Join(dir, "hold")
	wrapper := filepath.Join(dir, "tgtd")
	script := fmt.Sprintf("#!/bin/sh\n[ -e %q ] && { echo held by the test >&2; exit 1; }\nexec %q \"$@\"\n", hold, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	portal := tgttest.FreePortal(t)
	k := keep(t, tgt.ManagedConfig{ControlPort: tgttest.FreeControlPort(t), Portals: []string{portal}, Tgtd: wrapper, Log: testLog(t)}, nil)
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := k.PID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "Problem saying tgtd cannot start", func() bool {
		p := k.Problem()
		return p != nil && strings.Contains(p.Error(), "cannot be started again") && strings.Contains(p.Error(), "held by the test")
	})
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "tgtd back once it can start", func() bool { return k.Problem() == nil && k.PID() != old })
}

// keep starts a kept tgtd and its keeper, stopped when the test ends.
func keep(t *testing.T, cfg tgt.ManagedConfig, onChange func()) *tgt.Keeper {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k, err := tgt.Keep(ctx, cfg, onChange)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		_ = k.Stop(context.Background())
		cancel()
		<-done
	})
	return k
}
