package cli

import (
	"strings"
	"testing"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/golden"
)

// TestSnapshotAndCopyOutputs checks what snapshot, image cp and image mv
// print against golden files (go test -update rewrites them).
func TestSnapshotAndCopyOutputs(t *testing.T) {
	for _, tc := range []struct {
		golden string
		args   []string
		ready  []string // images that turn Ready on their first GetImage
	}{
		{"snapshot_ls.table", []string{"snapshot", "ls"}, nil},
		{"snapshot_ls_all.wide", []string{"snapshot", "ls", "-A", "-o", "wide"}, nil},
		{"snapshot_ls.json", []string{"snapshot", "ls", "-o", "json"}, nil},
		{"snapshot_ls.yaml", []string{"snap", "ls", "-o", "yaml"}, nil},
		{"snapshot_ls_one.json", []string{"snapshot", "ls", "node-01-snap", "-o", "json"}, nil},
		{"snapshot_create.txt", []string{"snapshot", "create", "node-01", "snap-new"}, nil},
		{"snapshot_create_wait.txt", []string{"snapshot", "create", "node-01", "snap-new", "--wait"}, []string{"snap-new"}},
		{"snapshot_create.json", []string{"snapshot", "create", "node-01", "snap-new", "--wait", "-o", "json", "--label", "stage=test"}, []string{"snap-new"}},
		{"snapshot_rm.txt", []string{"snapshot", "rm", "node-01-snap-copy", "node-01-snap"}, nil},
		{"snapshot_rm.json", []string{"snapshot", "rm", "node-01-snap-copy", "-o", "json"}, nil},
		{"snapshot_rm.yaml", []string{"snapshot", "rm", "gpu-01-base", "-p", "lab", "-o", "yaml"}, nil},
		{"image_cp.txt", []string{"image", "cp", "debian-13", "debian-13-test"}, nil},
		{"image_cp.yaml", []string{"image", "cp", "debian-13", "debian-13-test", "--wait", "-o", "yaml"}, []string{"debian-13-test"}},
		{"image_cp_snapshot.txt", []string{"image", "cp", "node-01-snap", "keep"}, nil},
		{"image_mv.txt", []string{"image", "mv", "scratch", "scratch-2"}, []string{"scratch-2"}},
		{"image_mv.json", []string{"image", "mv", "scratch", "scratch-2", "-o", "json"}, []string{"scratch-2"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			f, addr := newSnapFake(t)
			for _, n := range tc.ready {
				f.readyAfter[n] = 1
			}
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, tc.args...)...)
			if r.code != ExitOK {
				t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
			}
			golden.Check(t, tc.golden, r.stdout)
		})
	}
}

// What the commands change, and the progress they report.
func TestSnapshotCreateWaits(t *testing.T) {
	f, addr := newSnapFake(t)
	f.readyAfter["snap-new"] = 3
	r := runCLI(t, testCtx(t), nil, "--endpoints", addr, "snapshot", "create", "node-01", "snap-new", "--wait")
	if r.code != ExitOK {
		t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
	}
	if want := "image/snap-new: Pending: no agent has reported yet\nimage/snap-new: Ready\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	if n := f.gets["snap-new"]; n != 3 {
		t.Errorf("%d polls, want 3", n)
	}
	im, ok := f.image(t, "default", "snap-new")
	if !ok || im.Spec.GetSource().GetSnapshot().GetNode() != "node-01" {
		t.Fatalf("image = %v", im)
	}
}

func TestImageMvRemovesOld(t *testing.T) {
	f, addr := newSnapFake(t)
	f.readyAfter["scratch-2"] = 2
	r := runCLI(t, testCtx(t), nil, "--endpoints", addr, "image", "mv", "scratch", "scratch-2")
	if r.code != ExitOK {
		t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
	}
	if _, ok := f.image(t, "default", "scratch"); ok {
		t.Error("image scratch still exists after mv")
	}
	im, ok := f.image(t, "default", "scratch-2")
	if !ok || im.Spec.GetSource().GetCopy().GetImage() != "scratch" {
		t.Fatalf("image scratch-2 = %v", im)
	}
}

func TestSnapshotAndCopyErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		want  []string // substrings of stderr
		setup func(f *snapFake)
		// kept: images that must still exist afterwards
		kept []string
	}{
		{name: "snapshot of a missing node", args: []string{"snapshot", "create", "ghost", "s"}, code: ExitConflict,
			want: []string{`node "ghost" does not exist in project "default"`}},
		{name: "snapshot of an unplaced node", args: []string{"snapshot", "create", "node-02", "s"}, code: ExitConflict,
			want: []string{`node "node-02" in project "default" is not placed on an agent yet (no Ready agent holds image "debian-13")`}},
		{name: "snapshot of a node being deleted", args: []string{"snapshot", "create", "node-01", "s"}, code: ExitConflict,
			want: []string{"is being deleted"}, setup: func(f *snapFake) {
				f.nodes[key("default", "node-01")].Metadata.DeleteTime = ago(0)
			}},
		{name: "snapshot onto an existing image", args: []string{"snapshot", "create", "node-01", "scratch"}, code: ExitConflict,
			want: []string{`image "scratch" already exists`}},
		{name: "snapshot wait fails", args: []string{"snapshot", "create", "node-01", "s", "--wait"}, code: ExitError,
			want: []string{"error: image/s failed on agent storage-1: copy: no space left on device"}, setup: func(f *snapFake) { f.failAfter["s"] = 1 }},
		{name: "snapshot wait times out", args: []string{"snapshot", "create", "node-01", "s", "--wait", "--timeout", "300ms"}, code: ExitTimeout,
			want: []string{"error: timed out after 300ms waiting for image/s (last seen Pending: no agent has reported yet) to be ready"}},
		{name: "snapshot rm of an image that is not a snapshot", args: []string{"snapshot", "rm", "scratch"}, code: ExitConflict,
			want: []string{"image/scratch is not a snapshot (its source is blank): use sanbootctl image rm scratch"}, kept: []string{"scratch"}},
		{name: "snapshot rm of a missing image", args: []string{"snapshot", "rm", "ghost"}, code: ExitNotFound,
			want: []string{`image "ghost" not found`}},
		{name: "snapshot rm ignore not found", args: []string{"snapshot", "rm", "ghost", "--ignore-not-found"}, code: ExitOK},
		{name: "snapshot bad output", args: []string{"snapshot", "rm", "ghost", "-o", "table"}, code: ExitUsage,
			want: []string{`-o "table": use text, json or yaml`}},
		{name: "image rm names nodes and snapshots", args: []string{"image", "rm", "ubuntu-24", "-p", "lab"}, code: ExitConflict,
			want: []string{"is used by nodes gpu-01 and by snapshots gpu-01-base"}, kept: []string{"ubuntu-24"}},
		{name: "cp of a missing image", args: []string{"image", "cp", "ghost", "x"}, code: ExitNotFound,
			want: []string{`image "ghost" not found`}},
		{name: "cp onto an existing image", args: []string{"image", "cp", "debian-13", "scratch"}, code: ExitConflict,
			want: []string{`image "scratch" already exists`}},
		{name: "mv of an image nodes and snapshots use", args: []string{"image", "mv", "ubuntu-24", "ubuntu", "-p", "lab"}, code: ExitConflict,
			want: []string{"image/ubuntu-24 is used by nodes gpu-01 and by snapshots gpu-01-base, so it cannot be removed: delete them first, or use image cp"}},
		{name: "mv of a protected image", args: []string{"image", "mv", "debian-13", "debian"}, code: ExitConflict,
			want: []string{"image/debian-13 is protected"}},
		{name: "mv onto itself", args: []string{"image", "mv", "scratch", "scratch"}, code: ExitUsage,
			want: []string{`OLD and NEW are both "scratch"`}},
		{name: "mv whose copy fails", args: []string{"image", "mv", "scratch", "scratch-2"}, code: ExitError,
			want: []string{"image/scratch-2 failed on agent storage-1", "image/scratch was kept"}, kept: []string{"scratch", "scratch-2"},
			setup: func(f *snapFake) { f.failAfter["scratch-2"] = 1 }},
		{name: "mv whose copy is late", args: []string{"image", "mv", "scratch", "scratch-2", "--timeout", "300ms"}, code: ExitTimeout,
			want: []string{"timed out after 300ms waiting for image/scratch-2", "image/scratch was kept"}, kept: []string{"scratch", "scratch-2"}},
		{name: "mv whose old image got a user", args: []string{"image", "mv", "scratch", "scratch-2"}, code: ExitConflict,
			want: []string{"image/scratch-2 was created and is Ready, but image/scratch could not be removed: " +
				`image "scratch" in project "default" is used by nodes late: delete them first; both exist now: remove image/scratch with sanbootctl image rm scratch`},
			kept: []string{"scratch", "scratch-2"},
			setup: func(f *snapFake) {
				f.readyAfter["scratch-2"] = 1
				f.onReady = func(f *snapFake, _ string) {
					f.nodes[key("default", "late")] = &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "late"}, Spec: &sanbootv1.NodeSpec{Image: "scratch"}}
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addr := newSnapFake(t)
			if tc.setup != nil {
				f.mu.Lock()
				tc.setup(f)
				f.mu.Unlock()
			}
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not contain %q", r.stderr, w)
				}
			}
			if tc.code != ExitOK && !cleanError(r.stderr) {
				t.Errorf("stderr should end in one clean error line: %q", r.stderr)
			}
			for _, name := range tc.kept {
				project := "default"
				if strings.Contains(strings.Join(tc.args, " "), "-p lab") {
					project = "lab"
				}
				if _, ok := f.image(t, project, name); !ok {
					t.Errorf("image %s/%s is gone", project, name)
				}
			}
		})
	}
}
