package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/golden"
	"github.com/sanboot/sanboot/internal/syncbuf"
)

// transcript is a run's exit code, stdout and stderr as one golden file.
func transcript(r result) string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

const manifests = "testdata/manifests/"

// TestDeclarativeGolden runs apply, diff, delete, describe, get -o
// name|jsonpath, wait --for=condition and config view against the seeded
// fake, in order, each with a golden transcript (exit code, stdout,
// stderr) in testdata/ (go test -run TestDeclarativeGolden -update
// rewrites them).
func TestDeclarativeGolden(t *testing.T) {
	f, addr := seededFake(t)
	f.readyImages = true
	f.mu.Lock()
	f.events = map[string][]*sanbootv1.Event{key("default", "node-01"): {
		{Time: ago(3 * time.Hour), Type: "Normal", Reason: "Created", Message: `node created from image "debian-13" (generation 1)`, Count: 1},
		{Time: ago(3 * time.Hour), Type: "Normal", Reason: "Scheduled", Message: `placed on agent "storage-1"`, Count: 1},
		{Time: ago(2 * time.Hour), Type: "Normal", Reason: api.PhaseReady, Message: "phase Ready", Count: 2},
	}}
	f.nodes[key("default", "node-01")].Status.Conditions = []*sanbootv1.Condition{
		{Type: api.ConditionScheduled, Status: true, Reason: "Scheduled", LastTransitionTime: ago(3 * time.Hour)},
		{Type: api.ConditionAgentAvailable, Status: true, Reason: "LeaseAlive", Message: `agent "storage-1" is alive`},
		{Type: api.ConditionReady, Status: true, Reason: api.PhaseReady, LastTransitionTime: ago(2 * time.Hour)},
	}
	f.nodes[key("default", "node-01")].LastBootFetch = &sanbootv1.BootFetch{NodeUid: "u-1", Time: ago(90 * time.Minute),
		RemoteAddr: "10.0.0.21:49152", Platform: "efi", Outcome: "boot"}
	f.nodes[key("default", "node-01")].Status.Sessions = []*sanbootv1.TargetSession{
		{Initiator: "iqn.2026-11.io.sanboot:initiator.default.node-01", Address: "10.0.0.21"},
		{Initiator: "iqn.2026-11.io.sanboot:initiator.default.node-01", Address: "10.0.1.21"},
	}
	f.nodes[key("default", "node-02")].Status.Conditions = []*sanbootv1.Condition{
		{Type: api.ConditionScheduled, Status: false, Reason: "NoAgentHoldsImage", Message: `no Ready agent holds image "debian-13"`},
		{Type: api.ConditionAgentAvailable, Status: false, Reason: "NotScheduled", Message: "the node has no agent yet"},
		{Type: api.ConditionReady, Status: false, Reason: api.PhasePending},
	}
	f.mu.Unlock()
	steps := []struct {
		golden string
		args   []string
	}{
		{"diff_before.txt", []string{"diff", "-f", manifests + "site/images.yaml", "-f", manifests + "site/nodes.yaml"}},
		{"apply_dry_run.txt", []string{"apply", "-f", manifests + "site/images.yaml", "-f", manifests + "site/nodes.yaml", "--dry-run=server"}},
		{"apply.txt", []string{"apply", "-f", manifests + "site"}},
		{"apply_again.txt", []string{"apply", "-f", manifests + "site/images.yaml", "-f", manifests + "site/nodes.yaml"}},
		{"diff_after.txt", []string{"diff", "-f", manifests + "site/nodes.yaml"}},
		{"apply_other_project.txt", []string{"apply", "-f", manifests + "lab.yaml"}},
		{"get_nodes_name.txt", []string{"get", "nodes", "-A", "-o", "name"}},
		{"get_nodes_jsonpath.txt", []string{"get", "nodes", "-o", `jsonpath={range .nodes[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}`}},
		{"get_node_jsonpath.txt", []string{"get", "node", "node-01", "-o", "jsonpath={.status.portals[*]}"}},
		{"get_images_name.txt", []string{"get", "images", "-o", "name"}},
		{"describe_node.txt", []string{"describe", "node", "node-01"}},
		{"describe_node_pending.txt", []string{"describe", "node", "node-02", "-p", "default"}},
		{"describe_missing.txt", []string{"describe", "node", "nope"}},
		{"wait_condition.txt", []string{"wait", "node", "node-01", "--for=condition=AgentAvailable"}},
		{"wait_condition_false.txt", []string{"wait", "node", "node-02", "--for=condition=scheduled=false"}},
		{"wait_selector.txt", []string{"wait", "node", "-l", "rack=r2", "--for=condition=Scheduled=false"}},
		{"delete_selector_none.txt", []string{"delete", "node", "-l", "rack=r9"}},
		{"apply_prune_dry_run.txt", []string{"apply", "-f", manifests + "rack-r1.yaml", "--prune", "-l", "rack=r1", "--dry-run"}},
		{"apply_prune.txt", []string{"apply", "-f", manifests + "rack-r1.yaml", "--prune", "-l", "rack=r1"}},
		{"delete_node.txt", []string{"delete", "node", "node-03", "node-10"}},
		{"delete_keep_disk_unplaced.txt", []string{"delete", "node", "node-02", "--keep-disk"}},
		{"delete_file.txt", []string{"delete", "-f", manifests + "lab.yaml"}},
		{"delete_missing.txt", []string{"delete", "node", "nope"}},
		{"delete_missing_ignored.txt", []string{"delete", "node", "nope", "--ignore-not-found"}},
	}
	for _, st := range steps {
		r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, st.args...)...)
		golden.Check(t, st.golden, transcript(r))
	}
}

// TestConfigView shows where each setting came from.
func TestConfigView(t *testing.T) {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, ".config", "sanboot", "config.yaml"), "endpoints: [10.0.0.1:7443]\nproject: lab\n")
	for _, tc := range []struct {
		golden string
		env    map[string]string
		args   []string
	}{
		{"config_view_file.txt", map[string]string{"HOME": home}, []string{"config", "view"}},
		{"config_view_env.txt", map[string]string{"HOME": home, "SANBOOT_PROJECT": "env-project"}, []string{"--endpoints", "127.0.0.1:9", "config", "view", "-o", "json"}},
	} {
		r := runCLI(t, testCtx(t), tc.env, tc.args...)
		golden.Check(t, tc.golden, strings.ReplaceAll(transcript(r), home, "$HOME"))
	}
}

// TestApplyWait: apply --wait waits for the applied images (polling) and
// nodes (watch) and fails with the agent's message when a node fails.
func TestApplyWait(t *testing.T) {
	f, addr := seededFake(t)
	f.readyImages = true
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "n.yaml"), "apiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: node-30}\nspec: {image: debian-13}\n---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: node-31}\nspec: {image: debian-13}\n")
	done := runAsync(t, "--endpoints", addr, "apply", "-f", filepath.Join(dir, "n.yaml"), "--wait")
	awaitSynced(t, f, 1, done)
	f.setNodeStatus(t, "default", "node-30", &sanbootv1.NodeStatus{Phase: api.PhaseReady, ObservedGeneration: 1})
	f.setNodeStatus(t, "default", "node-31", &sanbootv1.NodeStatus{Phase: api.PhaseFailed, Message: "clone disk: no space left on device", ObservedGeneration: 1})
	r := awaitResult(t, done)
	if r.code != ExitError || !strings.Contains(r.stderr, "error: node/node-31 failed: clone disk: no space left on device") ||
		r.stdout != "node/node-30 created\nnode/node-31 created\nnode/node-30 ready\n" {
		t.Errorf("code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	f.setNodeStatus(t, "default", "node-31", &sanbootv1.NodeStatus{Phase: api.PhaseProvisioning, ObservedGeneration: 1})
	r = runCLI(t, testCtx(t), nil, "--endpoints", addr, "apply", "-f", filepath.Join(dir, "n.yaml"), "--wait", "--timeout", "1s")
	if r.code != ExitTimeout {
		t.Errorf("a node that stays Provisioning: code %d, want %d; stderr %q", r.code, ExitTimeout, r.stderr)
	}
}

// TestApplyFileSource: an Image with spec.source.file uploads the file
// (relative to the manifest) when the image does not exist, and not again.
func TestApplyFileSource(t *testing.T) {
	f, addr := seededFake(t)
	dir := t.TempDir()
	disk := make([]byte, 4096)
	copy(disk, "a disk")
	if err := os.WriteFile(filepath.Join(dir, "disk.raw"), disk, 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "img.yaml"), "apiVersion: sanboot.io/v1\nkind: Image\nmetadata: {name: tiny}\nspec:\n  source: {file: disk.raw}\n")
	r := runCLI(t, testCtx(t), nil, "--endpoints", addr, "apply", "-f", filepath.Join(dir, "img.yaml"), "--dry-run=server")
	if r.code != ExitOK || !strings.Contains(r.stdout, "image/tiny created (") || !strings.Contains(r.stdout, "not uploaded) (server dry run)") || f.writes() != 0 {
		t.Fatalf("dry run: code %d stdout %q stderr %q writes %d", r.code, r.stdout, r.stderr, f.writes())
	}
	r = runCLI(t, testCtx(t), nil, "--endpoints", addr, "apply", "-f", filepath.Join(dir, "img.yaml"))
	if r.code != ExitOK || !strings.Contains(r.stdout, "image/tiny created (uploaded ") || f.callCount("UploadImage") != 1 {
		t.Fatalf("code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	im, err := (&fakeSanboot{}).getImageLocked(f, "default", "tiny")
	if err != nil || im.GetSpec().GetSizeBytes() != 4096 || im.GetSpec().GetSource().GetUpload().GetSha256() != fakeSum(disk) {
		t.Fatalf("image %v, %v", im, err)
	}
	r = runCLI(t, testCtx(t), nil, "--endpoints", addr, "apply", "-f", filepath.Join(dir, "img.yaml"))
	if r.code != ExitOK || r.stdout != "image/tiny unchanged\n" || f.callCount("UploadImage") != 1 {
		t.Fatalf("again: code %d stdout %q stderr %q uploads %d", r.code, r.stdout, r.stderr, f.callCount("UploadImage"))
	}
	r = runCLI(t, testCtx(t), nil, "--endpoints", addr, "diff", "-f", filepath.Join(dir, "img.yaml"))
	if r.code != ExitOK || r.stdout != "" {
		t.Fatalf("diff: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func (*fakeSanboot) getImageLocked(f *fakeSanboot, project, name string) (*sanbootv1.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[key(project, name)]
	if !ok {
		return nil, fmt.Errorf("no image %s/%s", project, name)
	}
	return im, nil
}

// TestGetWatch: get nodes -w prints the table, then a row per change of a
// selected node, and ends quietly (exit 0) when interrupted.
func TestGetWatch(t *testing.T) {
	f, addr := seededFake(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var out, errOut syncbuf.Buffer
	done := make(chan result, 1)
	go func() {
		code := Run(ctx, Env{Stdout: &out, Stderr: &errOut, Now: func() time.Time { return fixedNow },
			Getenv: func(k string) string { return map[string]string{"HOME": t.TempDir()}[k] }},
			[]string{"--endpoints", addr, "get", "nodes", "-w", "-l", "rack=r2"})
		done <- result{code: code, stdout: out.String(), stderr: errOut.String()}
	}()
	awaitSynced(t, f, 1, done)
	f.setNodeStatus(t, "default", "node-02", &sanbootv1.NodeStatus{Phase: api.PhaseProvisioning, Agent: "storage-1", ObservedGeneration: 1})
	f.setNodeStatus(t, "default", "node-01", &sanbootv1.NodeStatus{Phase: api.PhaseFailed}) // not rack=r2: not shown
	f.setNodeStatus(t, "default", "node-02", &sanbootv1.NodeStatus{Phase: api.PhaseReady, Agent: "storage-1", ObservedGeneration: 1})
	eventually.True(t, "a Ready row", func() bool { return strings.Contains(out.String(), "Ready") },
		eventually.Seen(func() string { return "stdout:\n" + out.String() }))
	cancel()
	r := awaitResult(t, done)
	golden.Check(t, "get_nodes_watch.txt", transcript(r))
}
