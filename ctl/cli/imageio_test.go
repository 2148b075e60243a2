package cli

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/bytesize"
)

// runWith runs sanbootctl in-process against addr with stdin and a
// terminal answer (for progress bars).
func runWith(t *testing.T, addr string, stdin io.Reader, terminal bool, args ...string) result {
	t.Helper()
	env := map[string]string{"HOME": t.TempDir(), "SANBOOT_ENDPOINTS": addr}
	var out, errOut bytes.Buffer
	code := Run(testCtx(t), Env{
		Stdout: &out, Stderr: &errOut, Stdin: stdin,
		Getenv:   func(k string) string { return env[k] },
		Now:      func() time.Time { return fixedNow },
		Terminal: func(io.Writer) bool { return terminal },
	}, args)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/5000)
	}
	return b
}

func diskFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fakeSanboot) imageSpec(t *testing.T, name string) *sanbootv1.ImageSpec {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[key("", name)]
	if !ok {
		t.Fatalf("fake: no image %s", name)
	}
	return im.Spec
}

func TestImportFileUploadsThenCreates(t *testing.T) {
	f := newFakeSanboot(fixedNow)
	addr := f.serve(t)
	b := data(3<<20 + 512)
	r := runWith(t, addr, nil, false, "image", "import", "img", diskFile(t, b), "--agents", "s1,s2", "--label", "os=debian")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if want := "image/img created (" + bytesize.Format(int64(len(b))) + ", sha256 " + fakeSum(b) + ")\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
	if r.stderr != "" {
		t.Fatalf("stderr %q: not a terminal, so no progress bar", r.stderr)
	}
	spec := f.imageSpec(t, "img")
	up := spec.GetSource().GetUpload()
	if spec.SizeBytes != int64(len(b)) || up.GetSha256() != fakeSum(b) || up.GetMember() != fakeMember || strings.Join(spec.Agents, ",") != "s1,s2" {
		t.Fatalf("spec %v", spec)
	}
	if !bytes.Equal(f.upload(up.GetUploadId()), b) {
		t.Fatal("the upload's bytes are not the file's")
	}
}

func TestImportStdinWithProgressOnATerminal(t *testing.T) {
	f := newFakeSanboot(fixedNow)
	addr := f.serve(t)
	b := data(2 << 20)
	r := runWith(t, addr, bytes.NewReader(b), true, "image", "import", "img", "-", "--size", "2MiB")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"uploading stdin", "100%", "2.0 MiB"} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("stderr %q lacks %q: a terminal gets a progress bar", r.stderr, want)
		}
	}
	if up := f.imageSpec(t, "img").GetSource().GetUpload(); !bytes.Equal(f.upload(up.GetUploadId()), b) {
		t.Fatal("the upload's bytes are not stdin's")
	}

	// Not a terminal: nothing but the result.
	r = runWith(t, addr, bytes.NewReader(b), false, "image", "import", "img2", "-")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q; want 0 and nothing", r.code, r.stderr)
	}
}

func TestImportWaitsForReplicas(t *testing.T) {
	f := newFakeSanboot(fixedNow)
	addr := f.serve(t)
	b := data(1 << 20)
	ctx := testCtx(t)
	go func() { // the agents: Ready once the image exists
		for ctx.Err() == nil && !f.setImageStatus("default", "img", &sanbootv1.ImageStatus{Phase: api.ReplicaReady, Sha256: fakeSum(b),
			Replicas: []*sanbootv1.ImageReplica{{Agent: "s1", Phase: api.ReplicaReady, Sha256: fakeSum(b), ObservedGeneration: 1}}}) {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	r := runWith(t, addr, nil, false, "image", "import", "img", diskFile(t, b), "--wait")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
}

func TestImportErrors(t *testing.T) {
	f := newFakeSanboot(fixedNow)
	addr := f.serve(t)
	f.addImage(&sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "taken"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 512}})
	file := diskFile(t, data(4096))
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"exists", []string{"image", "import", "taken", file}, ExitConflict, "images do not change"},
		{"no file", []string{"image", "import", "img"}, ExitUsage, "FILE"},
		{"file and url", []string{"image", "import", "img", file, "--from-url", "http://127.0.0.1:1/x"}, ExitUsage, "only the NAME"},
		{"bad name", []string{"image", "import", "Img", file}, ExitUsage, "NAME"},
		{"missing file", []string{"image", "import", "img", file + ".nope"}, ExitError, "no such file"},
		{"size mismatch", []string{"image", "import", "img", file, "--size", "1MiB"}, ExitUsage, "does not match"},
		{"wrong sha256", []string{"image", "import", "img", file, "--sha256", strings.Repeat("a", 64)}, ExitError, "sha256"},
		{"bad sha256", []string{"image", "import", "img", file, "--sha256", "abc"}, ExitUsage, "64 lowercase hex"},
		{"bad url", []string{"image", "import", "img", "--from-url", "ftp://x/y"}, ExitUsage, "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.callCount("UploadImage")
			r := runWith(t, addr, nil, false, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", r.code, r.stderr, tc.code, tc.want)
			}
			if tc.name == "exists" && f.callCount("UploadImage") != before {
				t.Fatal("an import over an existing image uploaded its bytes")
			}
			f.mu.Lock()
			_, created := f.images[key("", "img")]
			f.mu.Unlock()
			if created {
				t.Fatal("a failed import created the image")
			}
		})
	}
}

func TestImportFromURL(t *testing.T) {
	f := newFakeSanboot(fixedNow)
	addr := f.serve(t)
	var heads atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			heads.Add(1)
		}
		w.Header().Set("Content-Length", strconv.Itoa(10<<20))
	}))
	defer hs.Close()
	sum := strings.Repeat("b", 64)
	r := runWith(t, addr, nil, false, "image", "import", "img", "--from-url", hs.URL+"/img.raw", "--sha256", sum)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	spec := f.imageSpec(t, "img")
	if u := spec.GetSource().GetUrl(); spec.SizeBytes != 10<<20 || u.GetUrl() != hs.URL+"/img.raw" || u.GetSha256() != sum || heads.Load() != 1 {
		t.Fatalf("spec %v after %d HEAD requests; want the URL, its sha256 and the size from one HEAD", spec, heads.Load())
	}
	if f.callCount("UploadImage") != 0 {
		t.Fatal("--from-url uploaded bytes")
	}
	// --size: no HEAD.
	r = runWith(t, addr, nil, false, "image", "import", "img2", "--from-url", hs.URL+"/img.raw", "--size", "1MiB")
	if r.code != ExitOK || heads.Load() != 1 || f.imageSpec(t, "img2").SizeBytes != 1<<20 {
		t.Fatalf("exit %d (%s), %d HEADs, spec %v", r.code, r.stderr, heads.Load(), f.imageSpec(t, "img2"))
	}
}

// exportFake is a fake with image img whose bytes (with a hole) and
// recorded sha256 are b.
func exportFake(t *testing.T, sha256 bool) (*fakeSanboot, string, []byte) {
	f := newFakeSanboot(fixedNow)
	b := data(3 << 20)
	clear(b[1<<20 : 2<<20])
	st := &sanbootv1.ImageStatus{Phase: api.ReplicaReady}
	if sha256 {
		st.Sha256 = fakeSum(b)
	}
	f.addImage(&sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: int64(len(b))}, Status: st})
	f.setExport("default", "img", b)
	return f, f.serve(t), b
}

// entries lists a directory: no temp file may be left.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestExportWritesVerifiedBytes(t *testing.T) {
	_, addr, b := exportFake(t, true)
	dir := t.TempDir()
	out := filepath.Join(dir, "img.raw")
	r := runWith(t, addr, nil, false, "image", "export", "img", out)
	if r.code != ExitOK || !strings.Contains(r.stdout, "sha256 "+fakeSum(b)+" verified") || r.stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("FILE holds %d bytes (%v), want the image's %d", len(got), err, len(b))
	}
	if e := entries(t, dir); len(e) != 1 {
		t.Fatalf("directory holds %q, want only the export", e)
	}

	// An existing FILE needs --force.
	r = runWith(t, addr, nil, false, "image", "export", "img", out)
	if r.code == ExitOK || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming --force", r.code, r.stderr)
	}
	os.WriteFile(out, []byte("old"), 0o600)
	if r = runWith(t, addr, nil, false, "image", "export", "img", out, "--force"); r.code != ExitOK {
		t.Fatalf("--force: exit %d: %s", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, b) {
		t.Fatal("--force did not replace FILE")
	}

	// To stdout, the message on stderr; a progress bar on a terminal.
	r = runWith(t, addr, nil, true, "image", "export", "img", "-")
	if r.code != ExitOK || r.stdout != string(b) || !strings.Contains(r.stderr, "verified") || !strings.Contains(r.stderr, "100%") {
		t.Fatalf("exit %d, %d bytes on stdout, stderr %q", r.code, len(r.stdout), r.stderr)
	}
}

func TestExportFailsLoudlyAndLeavesNoFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeSanboot)
		want string
	}{
		{"damaged", func(f *fakeSanboot) { f.io.exportFlip = true }, "damaged"},
		{"interrupted", func(f *fakeSanboot) { f.io.exportCut = 1 << 20 }, "push broke"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addr, _ := exportFake(t, true)
			f.mu.Lock()
			tc.set(f)
			f.mu.Unlock()
			dir := t.TempDir()
			out := filepath.Join(dir, "img.raw")
			r := runWith(t, addr, nil, false, "image", "export", "img", out)
			if r.code != ExitError || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "nothing was written to "+out) {
				t.Fatalf("exit %d, stderr %q; want exit 1 saying %q and that nothing was written", r.code, r.stderr, tc.want)
			}
			if e := entries(t, dir); len(e) != 0 {
				t.Fatalf("a failed export left %q", e)
			}
			r = runWith(t, addr, nil, false, "image", "export", "img", "-")
			if r.code != ExitError || !strings.Contains(r.stderr, "discard them") {
				t.Fatalf("to stdout: exit %d, stderr %q; want exit 1 saying to discard the bytes", r.code, r.stderr)
			}
		})
	}
}

func TestExportWithoutRecordedChecksumSaysSo(t *testing.T) {
	_, addr, b := exportFake(t, false)
	out := filepath.Join(t.TempDir(), "img.raw")
	r := runWith(t, addr, nil, false, "image", "export", "img", out)
	if r.code != ExitOK || !strings.Contains(r.stdout, "records no sha256") || !strings.Contains(r.stdout, fakeSum(b)) {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runWith(t, addr, nil, false, "image", "export", "nope", out+"2")
	if r.code != ExitNotFound {
		t.Fatalf("export of a missing image: exit %d (%s), want %d", r.code, r.stderr, ExitNotFound)
	}
}
