// Package cephtest starts a real Ceph cluster for tests (1 mon, 1 mgr, 1
// BlueStore OSD on a sparse file, cephx on, 127.0.0.1, ports below 32768)
// with hack/ceph-cluster.sh, and stops it (only the daemons it started, by
// PID) when the test ends. Starting takes about 10 s on 2 cores: start one
// cluster per test function and give each subtest a pool of its own
// (NewPool), with a user that has only `profile rbd` on it, as an agent's
// user would.
//
// It needs the Ceph daemons and tools (ceph-mon, ceph-mgr, ceph-osd,
// ceph-common: hack/install-deps.sh installs them). When something is missing the test
// fails and says what to install: it never skips.
package cephtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Cluster is a running test cluster.
type Cluster struct {
	// Conf is the cluster's ceph.conf; its keyring holds client.admin and
	// client.<User>.
	Conf string
	// User is a cephx user (without "client.") with `profile rbd` on Pool.
	User string
	// Pool is an RBD pool made at start.
	Pool string
	// Dir holds the cluster's data, logs and sockets.
	Dir string

	pools atomic.Int64
}

// Start starts a cluster in a new temp dir (short: Ceph's unix sockets
// need short paths) and stops it and deletes the dir when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	for _, tool := range []struct{ name, pkg string }{
		{"ceph-mon", "ceph-mon"}, {"ceph-mgr", "ceph-mgr"}, {"ceph-osd", "ceph-osd"}, {"ceph", "ceph-common"}, {"rbd", "ceph-common"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			t.Fatalf("cephtest: %s not found in PATH: install %s (hack/install-deps.sh does)", tool.name, tool.pkg)
		}
	}
	parent, err := os.MkdirTemp("", "sanboot-ceph-")
	if err != nil {
		t.Fatalf("cephtest: %v", err)
	}
	dir := filepath.Join(parent, "c")
	script := filepath.Join(repoRoot(t), "hack", "ceph-cluster.sh")
	t.Cleanup(func() {
		if out, err := command(2*time.Minute, script, "down", dir); err != nil {
			t.Errorf("cephtest: %s down %s: %v: %s", script, dir, err, out)
		}
		os.Remove(parent)
	})
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "up", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cephtest: %s up %s: %v\n%s", script, dir, err, stderr.String())
	}
	c := &Cluster{Dir: dir}
	for f := range strings.FieldsSeq(stdout.String()) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "CEPH_CONF":
			c.Conf = v
		case "CEPH_USER":
			c.User = v
		case "CEPH_POOL":
			c.Pool = v
		}
	}
	if c.Conf == "" || c.User == "" || c.Pool == "" {
		t.Fatalf("cephtest: %s up printed %q: want CEPH_CONF, CEPH_USER and CEPH_POOL", script, stdout.String())
	}
	t.Logf("cephtest: cluster in %s (%s)", dir, strings.TrimSpace(lastLine(stderr.String())))
	return c
}

// Pool is a pool of the cluster with a user of its own.
type Pool struct {
	Name string
	// User has `profile rbd` on this pool only; its key is in Keyring.
	User    string
	Keyring string
}

// NewPool makes an RBD pool and a user restricted to it, and deletes both
// when the test ends.
func (c *Cluster) NewPool(t testing.TB) Pool {
	t.Helper()
	n := c.pools.Add(1)
	p := Pool{Name: fmt.Sprintf("test%d", n), User: fmt.Sprintf("test%d", n)}
	p.Keyring = filepath.Join(c.Dir, "keyring."+p.User)
	c.Admin(t, "ceph", "osd", "pool", "create", p.Name, "8", "8")
	c.Admin(t, "rbd", "pool", "init", p.Name)
	c.Admin(t, "ceph", "auth", "get-or-create", "client."+p.User, "mon", "profile rbd",
		"osd", "profile rbd pool="+p.Name, "mgr", "profile rbd pool="+p.Name, "-o", p.Keyring)
	t.Cleanup(func() {
		for _, args := range [][]string{
			{"ceph", "auth", "rm", "client." + p.User},
			{"ceph", "osd", "pool", "rm", p.Name, p.Name, "--yes-i-really-really-mean-it"},
		} {
			if out, err := c.command(args...); err != nil {
				t.Errorf("cephtest: %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	})
	return p
}

// Admin runs a ceph tool (ceph, rbd, rados: as client.admin against the
// cluster) or another command (e.g. qemu-io rbd:...) and returns its
// output; the test fails if it fails.
func (c *Cluster) Admin(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.command(args...)
	if err != nil {
		t.Fatalf("cephtest: %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *Cluster) command(args ...string) (string, error) {
	full := args
	switch args[0] {
	case "ceph":
		full = append([]string{args[0], "--conf", c.Conf, "--connect-timeout", "60"}, args[1:]...)
	case "rbd", "rados": // no --connect-timeout there
		full = append([]string{args[0], "--conf", c.Conf}, args[1:]...)
	}
	return command(2*time.Minute, full...)
}

func command(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// repoRoot is the module's root, found from this file's path (tests are
// always built from source).
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cephtest: cannot find the source tree (runtime.Caller failed)")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "hack", "ceph-cluster.sh")); err != nil {
		t.Fatalf("cephtest: %v: run the tests from a sanboot source tree", err)
	}
	return root
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
