package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/golden"
)

// fixedNow is the clock of every test: ages in tables are computed from it.
var fixedNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(fixedNow.Add(-d)) }

// result is what one sanbootctl run produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs sanbootctl in-process. env is the whole environment; HOME
// points at an empty temporary directory unless env sets it, so that no
// real config file is read.
func runCLI(t *testing.T, ctx context.Context, env map[string]string, args ...string) result {
	t.Helper()
	if _, ok := env["HOME"]; !ok {
		env = cloneEnv(env)
		env["HOME"] = t.TempDir()
	}
	var out, errOut bytes.Buffer
	code := Run(ctx, Env{
		Stdout: &out,
		Stderr: &errOut,
		Getenv: func(k string) string { return env[k] },
		Now:    func() time.Time { return fixedNow },
	}, args)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func cloneEnv(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// testCtx is a generous bound for one test, so that a hang fails rather
// than stalls the package.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// seededFake returns a fake with a few nodes, images and agents in two
// projects, and its address.
func seededFake(t *testing.T) (*fakeSanboot, string) {
	f := newFakeSanboot(fixedNow)
	f.addNode(&sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "node-01", Generation: 2, CreateTime: ago(3*time.Hour + 5*time.Minute), Labels: map[string]string{"rack": "r1"}, Uid: "u-1"},
		Spec:     &sanbootv1.NodeSpec{Image: "debian-13", Macs: []string{"52:54:00:12:34:56"}},
		Status: &sanbootv1.NodeStatus{Phase: api.PhaseReady, Agent: "storage-1", TargetIqn: "iqn.2026-11.io.sanboot:default.node-01",
			Portals: []string{"10.0.0.1:3260", "10.0.1.1:3260"}, ObservedGeneration: 2, CloneMode: "reflink", UpdateTime: ago(time.Hour),
			FailoverAgents: []string{"storage-2", "storage-3"}},
	})
	f.addNode(&sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "node-02", Generation: 1, CreateTime: ago(45 * time.Second), Labels: map[string]string{"rack": "r2"}},
		Spec:     &sanbootv1.NodeSpec{Image: "debian-13"},
		Status:   &sanbootv1.NodeStatus{Phase: api.PhasePending, Message: `no Ready agent holds image "debian-13"`},
	})
	f.addNode(&sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "node-03", Generation: 1, CreateTime: ago(50 * time.Hour)},
		Spec:     &sanbootv1.NodeSpec{Image: "debian-13", InitiatorIqn: "iqn.2004-10.com.example:node-03", Agent: "storage-2", Chap: true},
		Status:   &sanbootv1.NodeStatus{Phase: api.PhaseFailed, Agent: "storage-2", Message: "clone disk: no space left on device", ObservedGeneration: 1},
	})
	f.addNode(&sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: "lab", Name: "gpu-01", Generation: 1, CreateTime: ago(10 * 24 * time.Hour)},
		Spec:     &sanbootv1.NodeSpec{Image: "ubuntu-24"},
		Status: &sanbootv1.NodeStatus{Phase: api.PhaseReady, Agent: "storage-1", TargetIqn: "iqn.2026-11.io.sanboot:lab.gpu-01",
			Portals: []string{"10.0.0.1:3260"}, ObservedGeneration: 1},
	})
	f.addImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "debian-13", Generation: 1, CreateTime: ago(30 * 24 * time.Hour), Labels: map[string]string{"os": "debian"}},
		Spec: &sanbootv1.ImageSpec{SizeBytes: 10 << 30, Protected: true,
			Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Url{Url: &sanbootv1.URLSource{Url: "https://images.example/debian-13.raw"}}}},
		Status: &sanbootv1.ImageStatus{Phase: "Ready", UsedBy: []string{"node-01", "node-02", "node-03"}, Replicas: []*sanbootv1.ImageReplica{
			{Agent: "storage-1", Phase: api.ReplicaReady, SizeBytes: 10 << 30, ObservedGeneration: 1},
			{Agent: "storage-2", Phase: api.ReplicaReady, SizeBytes: 10 << 30, ObservedGeneration: 1},
		}},
	})
	f.addImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "scratch", Generation: 1, CreateTime: ago(5 * time.Minute)},
		Spec: &sanbootv1.ImageSpec{SizeBytes: 1536 << 20, Agents: []string{"storage-1"},
			Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}}},
		Status: &sanbootv1.ImageStatus{Phase: "Pending", Replicas: []*sanbootv1.ImageReplica{{Agent: "storage-1", Phase: api.ReplicaPending}}},
	})
	f.addImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Project: "lab", Name: "ubuntu-24", Generation: 1, CreateTime: ago(7 * 24 * time.Hour)},
		Spec: &sanbootv1.ImageSpec{SizeBytes: 20 << 30,
			Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Copy{Copy: &sanbootv1.CopySource{Image: "ubuntu-base"}}}},
		Status: &sanbootv1.ImageStatus{Phase: "Ready", UsedBy: []string{"gpu-01"}, Replicas: []*sanbootv1.ImageReplica{
			{Agent: "storage-1", Phase: api.ReplicaReady, CloneDepth: 5, Flattening: true}}},
	})
	f.addAgent(&sanbootv1.Agent{
		Record: &sanbootv1.AgentRecord{Name: "storage-1", Version: "v0.1.0", Driver: "lio", Portals: []string{"10.0.0.1:3260", "10.0.1.1:3260"},
			CapacityBytes: 2 << 40, FreeBytes: 1536 << 30, CloneMode: "reflink", StoreKind: "file", StartTime: ago(6*time.Hour + 30*time.Minute)},
		State: api.AgentReady, Nodes: 2,
	})
	f.addAgent(&sanbootv1.Agent{
		Record: &sanbootv1.AgentRecord{Name: "storage-2", Version: "v0.1.0", Driver: "tgt", Portals: []string{"127.0.0.1:3260"},
			AdvertisePortals: []string{"192.0.2.10:3260"}, CapacityBytes: 500 << 30, FreeBytes: 0, CloneMode: "copy", StoreKind: "rbd", StorageDomain: "rbd:6f1c2a9e-0b7d-4c55-9d0e-2f4b1e8a7c31/sanboot", StartTime: ago(40 * 24 * time.Hour)},
		State: api.AgentUnavailable, Nodes: 1,
	})
	return f, f.serve(t)
}

// TestOutputFormats checks get's tables, JSON and YAML against golden files
// in testdata/ (go test ./ctl/cli -run TestOutputFormats -update rewrites them).
func TestOutputFormats(t *testing.T) {
	_, addr := seededFake(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"get_nodes.table", []string{"get", "nodes"}},
		{"get_nodes_all.table", []string{"get", "nodes", "-A"}},
		{"get_nodes.wide", []string{"get", "nodes", "-o", "wide"}},
		{"get_nodes_all.wide", []string{"get", "no", "-A", "-o", "wide"}},
		{"get_nodes.json", []string{"get", "nodes", "-o", "json"}},
		{"get_nodes.yaml", []string{"get", "nodes", "-o", "yaml"}},
		{"get_node.json", []string{"get", "node", "node-01", "-o", "json"}},
		{"get_node.yaml", []string{"get", "node", "node-01", "-o", "yaml"}},
		{"get_nodes_rack_r1.table", []string{"get", "nodes", "-l", "rack=r1"}},
		{"get_nodes_lab.table", []string{"get", "nodes", "-p", "lab"}},
		{"get_images.table", []string{"get", "images"}},
		{"get_images.table", []string{"image", "ls"}},
		{"get_images_all.wide", []string{"get", "images", "-A", "-o", "wide"}},
		{"get_images.json", []string{"get", "images", "-o", "json"}},
		{"get_images.yaml", []string{"get", "img", "-o", "yaml"}},
		{"get_agents.table", []string{"get", "agents"}},
		{"get_agents.table", []string{"agents", "ls"}},
		{"get_agents.wide", []string{"get", "agent", "-o", "wide"}},
		{"get_agents.json", []string{"get", "agents", "-o", "json"}},
		{"get_agents.yaml", []string{"get", "agents", "-o", "yaml"}},
		{"get_agent.yaml", []string{"agents", "ls", "storage-2", "-o", "yaml"}},
		{"get_nodes_empty.json", []string{"get", "nodes", "-p", "empty", "-o", "json"}},
		{"get_nodes_empty.yaml", []string{"get", "nodes", "-p", "empty", "-o", "yaml"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, tc.args...)...)
			if r.code != ExitOK {
				t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
			}
			golden.Check(t, tc.golden, r.stdout)
		})
	}
}

func TestEmptyTableSaysSoOnStderr(t *testing.T) {
	_, addr := seededFake(t)
	r := runCLI(t, testCtx(t), nil, "--endpoints", addr, "get", "nodes", "-p", "empty")
	if r.code != ExitOK || r.stdout != "" || r.stderr != "No nodes found in project \"empty\".\n" {
		t.Errorf("got code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestExitCodes checks the exit code and message of failures.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stderr   string // substring
		stdout   string // exact, when not empty
		noStderr bool
	}{
		{"get missing node", []string{"get", "node", "nope"}, ExitNotFound, `error: node "nope" not found in project "default"`, "", false},
		{"get missing image", []string{"get", "image", "nope"}, ExitNotFound, `error: image "nope" not found`, "", false},
		{"get missing agent", []string{"get", "agent", "nope"}, ExitNotFound, `error: agent "nope" not found`, "", false},
		{"get found and missing", []string{"get", "nodes", "node-02", "nope"}, ExitNotFound, `node "nope" not found`,
			"NAME      IMAGE       AGENT    PHASE     AGE\nnode-02   debian-13   <none>   Pending   45s\n", false},
		{"image rm missing", []string{"image", "rm", "nope"}, ExitNotFound, `image "nope" not found`, "", false},
		{"image rm missing ignored", []string{"image", "rm", "nope", "--ignore-not-found"}, ExitOK, "", "", true},
		{"image rm protected", []string{"image", "rm", "debian-13"}, ExitConflict, `image "debian-13" is protected`, "", false},
		{"image rm ok", []string{"image", "rm", "scratch"}, ExitOK, "", "image/scratch deleted\n", true},
		{"image create exists differently", []string{"image", "create", "debian-13", "--size", "1GiB"}, ExitConflict, "already exists", "", false},
		{"image create", []string{"image", "create", "blank-1", "--size", "512MiB", "--agents", "storage-1,storage-2"}, ExitOK, "", "image/blank-1 created\n", true},
		{"image create unaligned", []string{"image", "create", "odd", "--size", "1000"}, ExitError, "error: spec.sizeBytes", "", false},
		{"provision exists differently", []string{"provision", "node-01", "--image", "other"}, ExitConflict, `error: node "node-01" already exists in project "default" with a different spec`, "", false},
		{"provision unchanged", []string{"provision", "node-02", "--image", "debian-13"}, ExitOK, "", "node/node-02 unchanged\n", true},
		{"provision created", []string{"provision", "node-09", "--image", "debian-13", "--mac", "52:54:00:AA:BB:CC", "--label", "rack=r9"}, ExitOK, "", "node/node-09 created\n", true},
		{"provision invalid mac from server", []string{"provision", "node-10", "--image", "debian-13", "--mac", "nope"}, ExitError, `spec.macs[0]: "nope" is not a MAC address`, "", false},
		{"deprovision missing", []string{"deprovision", "nope"}, ExitNotFound, `node "nope" not found`, "", false},
		{"deprovision missing ignored", []string{"deprovision", "nope", "--ignore-not-found"}, ExitOK, "", "", true},
		{"deprovision", []string{"deprovision", "node-03"}, ExitOK, "", "node/node-03 deleting\n", true},
		{"unknown command", []string{"frobnicate"}, ExitUsage, `unknown command "frobnicate"`, "", false},
		{"unknown flag", []string{"get", "nodes", "--bogus"}, ExitUsage, "unknown flag: --bogus", "", false},
		{"missing required flag", []string{"provision", "node-11"}, ExitUsage, `required flag(s) "image" not set`, "", false},
		{"too many args", []string{"provision", "a", "b", "--image", "x"}, ExitUsage, "provision takes one NODE name", "", false},
		{"bad output", []string{"get", "nodes", "-o", "xml"}, ExitUsage, `-o "xml"`, "", false},
		{"bad selector", []string{"get", "nodes", "-l", "a=b=c,!"}, ExitUsage, "label selector", "", false},
		{"names and selector", []string{"get", "nodes", "node-01", "-l", "a=b"}, ExitUsage, "cannot be combined", "", false},
		{"bad size", []string{"image", "create", "x", "--size", "ten"}, ExitUsage, `"ten" is not a size`, "", false},
		{"bad label", []string{"provision", "x", "--image", "y", "--label", "novalue"}, ExitUsage, `--label "novalue" is not key=value`, "", false},
		{"get without resource", []string{"get"}, ExitUsage, "name what to get", "", false},
		{"get unknown resource", []string{"get", "pods"}, ExitUsage, `cannot get "pods"`, "", false},
		{"describe without resource", []string{"describe"}, ExitUsage, "name what to describe: describe node NAME...", "", false},
		{"describe unknown resource", []string{"describe", "pod", "x"}, ExitUsage, `cannot describe "pod": use describe node NAME...`, "", false},
		{"wait without resource", []string{"wait"}, ExitUsage, "name what to wait for: wait node NAME...", "", false},
		{"wait unknown resource", []string{"wait", "pod", "x"}, ExitUsage, `cannot wait for "pod": use wait node NAME...`, "", false},
		{"wait bad condition", []string{"wait", "node", "x", "--for=happy"}, ExitUsage, "use --for=ready, --for=deleted or --for=condition=TYPE", "", false},
		{"wait without names", []string{"wait", "node"}, ExitUsage, "name at least one NODE", "", false},
		{"wait for ready, missing", []string{"wait", "node", "nope"}, ExitNotFound, `node "nope" not found in project "default"`, "", false},
		{"wait for deleted, missing", []string{"wait", "node", "nope", "--for=deleted"}, ExitOK, "", "node/nope deleted\n", true},
		{"wait for ready, already ready", []string{"wait", "node", "node-01"}, ExitOK, "", "node/node-01 ready\n", false},
		{"wait for ready, failed", []string{"wait", "node", "node-03", "--for=ready"}, ExitError, "node/node-03 failed: clone disk: no space left on device", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := seededFake(t)
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, tc.args...)...)
			if r.code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.stderr)
			}
			if tc.noStderr && r.stderr != "" {
				t.Errorf("unexpected stderr %q", r.stderr)
			}
			if tc.stdout != "" && r.stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.stdout, tc.stdout)
			}
			if tc.code != ExitOK && !cleanError(r.stderr) {
				t.Errorf("stderr should end in one clean error line: %q", r.stderr)
			}
		})
	}
}

// TestWaitTimeout: a node that stays Pending ends the wait with exit code 3
// and says what it last saw.
func TestWaitTimeout(t *testing.T) {
	_, addr := seededFake(t)
	for _, args := range [][]string{
		{"wait", "node", "node-02", "--timeout", "1s"},
		{"provision", "node-02", "--image", "debian-13", "--wait", "--timeout", "1s"},
		{"deprovision", "node-01", "--wait", "--timeout", "1s"},
	} {
		t.Run(args[0], func(t *testing.T) {
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, args...)...)
			if r.code != ExitTimeout {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, ExitTimeout, r.stderr)
			}
			if !strings.Contains(r.stderr, "error: timed out after 1s waiting for node/") || !strings.Contains(r.stderr, "(last seen ") {
				t.Errorf("stderr: %s", r.stderr)
			}
		})
	}
}

// awaitSynced waits until the fake has sent TYPE_SYNCED on n more watches.
func awaitSynced(t *testing.T, f *fakeSanboot, n int, done <-chan result) {
	t.Helper()
	for range n {
		select {
		case <-f.synced:
		case r := <-done:
			t.Fatalf("command ended before its watch was synced: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		case <-time.After(time.Minute):
			t.Fatal("no watch synced within a minute")
		}
	}
}

func runAsync(t *testing.T, args ...string) <-chan result {
	done := make(chan result, 1)
	ctx := testCtx(t)
	go func() { done <- runCLI(t, ctx, nil, args...) }()
	return done
}

func awaitResult(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(time.Minute):
		t.Fatal("command did not end within a minute")
		return result{}
	}
}

// TestProvisionWaitsForReadyThroughWatch: provision --wait follows the watch
// (INITIAL, SYNCED, then MODIFIED events), ignores a Ready status that is
// about an older generation, and ends on Ready for the current one. It never
// polls GetNode or ListNodes.
func TestProvisionWaitsForReadyThroughWatch(t *testing.T) {
	f, addr := seededFake(t)
	done := runAsync(t, "--endpoints", addr, "provision", "node-20", "--image", "debian-13", "--wait")
	awaitSynced(t, f, 1, done)

	// A Ready status about generation 0 (not the node's generation 1) must
	// not end the wait: had it, the Provisioning line below would be missing.
	f.setNodeStatus(t, "default", "node-20", &sanbootv1.NodeStatus{Phase: api.PhaseReady, ObservedGeneration: 0})
	f.setNodeStatus(t, "default", "node-20", &sanbootv1.NodeStatus{Phase: api.PhaseProvisioning, Message: "cloning disk", ObservedGeneration: 1})
	f.setNodeStatus(t, "default", "node-20", &sanbootv1.NodeStatus{Phase: api.PhaseReady, ObservedGeneration: 1, Agent: "storage-1"})

	r := awaitResult(t, done)
	if r.code != ExitOK {
		t.Fatalf("exit code %d; stderr:\n%s", r.code, r.stderr)
	}
	if want := "node/node-20 created\nnode/node-20 ready\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	wantProgress := "node/node-20: Pending: waiting for the scheduler\nnode/node-20: Ready\nnode/node-20: Provisioning: cloning disk\nnode/node-20: Ready\n"
	if r.stderr != wantProgress {
		t.Errorf("stderr %q, want %q", r.stderr, wantProgress)
	}
	if n := f.callCount("GetNode") + f.callCount("ListNodes"); n != 0 {
		t.Errorf("waiting made %d GetNode/ListNodes calls; it must follow the watch only", n)
	}
}

// TestWaitFailed: Failed for the current generation ends the wait with the
// agent's message and exit code 1.
func TestWaitFailed(t *testing.T) {
	f, addr := seededFake(t)
	done := runAsync(t, "--endpoints", addr, "wait", "node", "node-02", "--for=ready")
	awaitSynced(t, f, 1, done)
	f.setNodeStatus(t, "default", "node-02", &sanbootv1.NodeStatus{Phase: api.PhaseFailed, Message: "target: tgtadm exited 22", ObservedGeneration: 1})
	r := awaitResult(t, done)
	if r.code != ExitError || !strings.Contains(r.stderr, "node/node-02: Failed: target: tgtadm exited 22\n") ||
		!strings.Contains(r.stderr, "error: node/node-02 failed: target: tgtadm exited 22") {
		t.Errorf("code %d stderr:\n%s", r.code, r.stderr)
	}
}

// TestDeprovisionWaitsForDeleted: deprovision --wait ends on TYPE_DELETED.
func TestDeprovisionWaitsForDeleted(t *testing.T) {
	f, addr := seededFake(t)
	done := runAsync(t, "--endpoints", addr, "deprovision", "node-01", "node-02", "--wait")
	awaitSynced(t, f, 1, done)
	f.removeNode(t, "default", "node-02")
	f.removeNode(t, "default", "node-01")
	r := awaitResult(t, done)
	if r.code != ExitOK {
		t.Fatalf("exit code %d; stderr:\n%s", r.code, r.stderr)
	}
	if want := "node/node-02 deleted\nnode/node-01 deleted\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if !strings.Contains(r.stderr, "node/node-01: Deleting\n") {
		t.Errorf("stderr %q lacks the Deleting phase", r.stderr)
	}
}

// TestWaitReconnects: when the watch stream breaks (Unavailable), wait opens
// a new one and still sees the change. A stream that worked and broke (a
// member went away) is reopened without a word; a reconnect that fails
// again before its stream works is reported.
func TestWaitReconnects(t *testing.T) {
	for _, tc := range []struct {
		name           string
		broken, refuse int
		wantStderr     string // "": no word of the reconnects
	}{
		{"a member goes away", 1, 0, ""},
		{"two members go away, one after the other", 2, 0, ""},
		// gRPC retries a refused stream 5 times itself (internal/dial): 10
		// refusals fail two calls in a row.
		{"no member answers", 1, 10, "fake: no member reachable); reconnecting in 500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addr := seededFake(t)
			f.mu.Lock()
			f.failWatches, f.refuseWatches = tc.broken, tc.refuse
			f.mu.Unlock()
			done := runAsync(t, "--endpoints", addr, "wait", "node", "node-02")
			awaitSynced(t, f, tc.broken+1, done)
			f.setNodeStatus(t, "default", "node-02", &sanbootv1.NodeStatus{Phase: api.PhaseReady, ObservedGeneration: 1})
			r := awaitResult(t, done)
			if r.code != ExitOK || r.stdout != "node/node-02 ready\n" {
				t.Errorf("code %d stdout %q stderr:\n%s", r.code, r.stdout, r.stderr)
			}
			if got := strings.Contains(r.stderr, "watch interrupted"); got != (tc.wantStderr != "") || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr %q, want %q", r.stderr, tc.wantStderr)
			}
			if n, want := f.callCount("WatchNodes"), tc.broken+tc.refuse+1; n != want {
				t.Errorf("%d WatchNodes calls, want %d", n, want)
			}
		})
	}
}

// TestEndpointPrecedence: --endpoints beats SANBOOT_ENDPOINTS beats the
// config file; --config picks another file; projects resolve the same way.
func TestEndpointPrecedence(t *testing.T) {
	servers := map[string]string{} // agent name -> address of the fake that has it
	for _, name := range []string{"agent-flag", "agent-env", "agent-file", "agent-other-file"} {
		f := newFakeSanboot(fixedNow)
		f.addAgent(&sanbootv1.Agent{Record: &sanbootv1.AgentRecord{Name: name}, State: api.AgentReady})
		f.addNode(&sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: "p-file", Name: "in-p-file"}, Spec: &sanbootv1.NodeSpec{Image: "i"}})
		f.addNode(&sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: "p-env", Name: "in-p-env"}, Spec: &sanbootv1.NodeSpec{Image: "i"}})
		f.addNode(&sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: "p-flag", Name: "in-p-flag"}, Spec: &sanbootv1.NodeSpec{Image: "i"}})
		f.addNode(&sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "in-default"}, Spec: &sanbootv1.NodeSpec{Image: "i"}})
		servers[name] = f.serve(t)
	}
	home := t.TempDir()
	writeFile(t, filepath.Join(home, ".config", "sanboot", "config.yaml"),
		"# where the API is\nendpoints:\n  - "+servers["agent-file"]+"\nproject: p-file\n")
	other := filepath.Join(t.TempDir(), "other.yaml")
	writeFile(t, other, "endpoints: ["+servers["agent-other-file"]+"]\n")
	emptyHome := t.TempDir()

	for _, tc := range []struct {
		name      string
		env       map[string]string
		flags     []string
		wantAgent string
		wantNode  string
	}{
		{"flag beats env and file", map[string]string{"HOME": home, "SANBOOT_ENDPOINTS": servers["agent-env"], "SANBOOT_PROJECT": "p-env"},
			[]string{"--endpoints", servers["agent-flag"], "-p", "p-flag"}, "agent-flag", "in-p-flag"},
		{"env beats file", map[string]string{"HOME": home, "SANBOOT_ENDPOINTS": servers["agent-env"], "SANBOOT_PROJECT": "p-env"},
			nil, "agent-env", "in-p-env"},
		{"file", map[string]string{"HOME": home}, nil, "agent-file", "in-p-file"},
		{"XDG_CONFIG_HOME", map[string]string{"HOME": emptyHome, "XDG_CONFIG_HOME": filepath.Join(home, ".config")}, nil, "agent-file", "in-p-file"},
		{"--config picks the file", map[string]string{"HOME": home}, []string{"--config", other}, "agent-other-file", "in-default"},
		{"--project flag with file endpoints", map[string]string{"HOME": home}, []string{"--project", "p-flag"}, "agent-file", "in-p-flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, testCtx(t), tc.env, append(tc.flags, "get", "agents", "-o", "json")...)
			if r.code != ExitOK || !strings.Contains(r.stdout, `"name": "`+tc.wantAgent+`"`) {
				t.Errorf("get agents: code %d, want agent %s in:\n%s%s", r.code, tc.wantAgent, r.stdout, r.stderr)
			}
			r = runCLI(t, testCtx(t), tc.env, append(tc.flags, "get", "nodes")...)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if r.code != ExitOK || len(lines) != 2 || !strings.HasPrefix(lines[1], tc.wantNode+" ") {
				t.Errorf("get nodes: code %d, want only %s in:\n%s%s", r.code, tc.wantNode, r.stdout, r.stderr)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConfigFileErrors: a broken config file is an error that names the
// file and the line, even when flags would override its values.
func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"unknown key", "endpoints: [127.0.0.1:7443]\nprojcet: lab\n", `config.yaml:2: unknown field "projcet" (allowed keys: endpoints, project, cert, key, cacert)`},
		{"wrong type", "endpoints: [127.0.0.1:7443]\nproject:\n  name: lab\n", "config.yaml:3:"},
		{"bad endpoint", "project: lab\nendpoints:\n  - localhost\n", `config.yaml: endpoints[0]: "localhost" is not host:port`},
		{"syntax", "endpoints: [127.0.0.1:7443\n", "config.yaml:1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			writeFile(t, filepath.Join(home, ".config", "sanboot", "config.yaml"), tc.content)
			r := runCLI(t, testCtx(t), map[string]string{"HOME": home}, "get", "nodes")
			if r.code != ExitError || !strings.Contains(r.stderr, tc.want) || !strings.HasPrefix(r.stderr, "error: ") {
				t.Errorf("code %d, stderr %q, want %q", r.code, r.stderr, tc.want)
			}
		})
	}
	t.Run("missing --config file", func(t *testing.T) {
		r := runCLI(t, testCtx(t), nil, "--config", filepath.Join(t.TempDir(), "nope.yaml"), "get", "nodes")
		if r.code != ExitError || !strings.Contains(r.stderr, "nope.yaml does not exist") {
			t.Errorf("code %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("bad --endpoints is a usage error", func(t *testing.T) {
		r := runCLI(t, testCtx(t), nil, "--endpoints", "127.0.0.1", "get", "nodes")
		if r.code != ExitUsage || !strings.Contains(r.stderr, `--endpoints: "127.0.0.1" is not host:port`) {
			t.Errorf("code %d, stderr %q", r.code, r.stderr)
		}
	})
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestFailover: with two endpoints of which the first refuses connections,
// commands (unary and watch) still work.
func TestFailover(t *testing.T) {
	_, addr := seededFake(t)
	endpoints := closedAddr(t) + "," + addr
	r := runCLI(t, testCtx(t), nil, "--endpoints", endpoints, "get", "agents")
	if r.code != ExitOK || !strings.Contains(r.stdout, "storage-1") {
		t.Errorf("get agents: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, testCtx(t), map[string]string{"SANBOOT_ENDPOINTS": endpoints}, "wait", "node", "node-01")
	if r.code != ExitOK || r.stdout != "node/node-01 ready\n" {
		t.Errorf("wait: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestUnreachable: no endpoint answers; the error says where it looked.
func TestUnreachable(t *testing.T) {
	a, b := closedAddr(t), closedAddr(t)
	r := runCLI(t, testCtx(t), nil, "--endpoints", a+","+b, "get", "nodes")
	want := "error: cannot reach the sanboot API at " + a + "," + b + " (from --endpoints)"
	if r.code != ExitError || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("code %d, stderr %q, want prefix %q", r.code, r.stderr, want)
	}
}

// TestHelp: every command has examples, help exits 0 without reading any
// config, and the root help documents the exit codes.
func TestHelp(t *testing.T) {
	root := NewRoot(Env{})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && c.Example == "" {
			t.Errorf("%q has no examples", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)

	home := t.TempDir()
	writeFile(t, filepath.Join(home, ".config", "sanboot", "config.yaml"), "broken: [\n")
	r := runCLI(t, testCtx(t), map[string]string{"HOME": home}, "--help")
	if r.code != ExitOK || !strings.Contains(r.stdout, "Exit codes:") || !strings.Contains(r.stdout, "3  timeout while waiting") {
		t.Errorf("root help: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{{"provision", "--help"}, {"get", "nodes", "--help"}, {"completion", "bash"}} {
		r := runCLI(t, testCtx(t), map[string]string{"HOME": home}, args...)
		if r.code != ExitOK || r.stdout == "" {
			t.Errorf("%v: code %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

// cleanError reports whether stderr ends in exactly one "error: ..." line
// (possibly followed by a usage hint) without gRPC framing or a stack.
func cleanError(stderr string) bool {
	if strings.Count(stderr, "error: ") != 1 || strings.Contains(stderr, "rpc error") || strings.Contains(stderr, "goroutine ") {
		return false
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if strings.HasPrefix(last, "Run '") && len(lines) > 1 {
		last = lines[len(lines)-2]
	}
	return strings.HasPrefix(last, "error: ")
}
