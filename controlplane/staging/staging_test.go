package staging_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/controlplane/staging"
)

func open(t *testing.T) *staging.Area {
	t.Helper()
	a, err := staging.Open(filepath.Join(t.TempDir(), "uploads"), staging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// pattern is n bytes that are not all zero.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

// upload writes data in a few pieces and commits it.
func upload(t *testing.T, a *staging.Area, data []byte, wantSize int64, wantSHA string) (staging.Result, error) {
	t.Helper()
	w, err := a.Create(wantSize)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(len(data), 100000)
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	return w.Commit(context.Background(), wantSize, wantSHA)
}

// files lists the names in the area's directory.
func files(t *testing.T, a *staging.Area) []string {
	t.Helper()
	ents, err := os.ReadDir(a.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestRawUploadIsStagedUnderItsID(t *testing.T) {
	a := open(t)
	data := pattern(3 << 20)
	res, err := upload(t, a, data, int64(len(data)), sum(data))
	if err != nil {
		t.Fatal(err)
	}
	if !staging.ValidID(res.ID) || res.SHA256 != sum(data) || res.Size != int64(len(data)) || res.Format != "raw" {
		t.Fatalf("result %+v, want a valid id, sha256 %s, size %d, raw", res, sum(data), len(data))
	}
	if got := files(t, a); len(got) != 1 || got[0] != res.ID {
		t.Fatalf("directory holds %q, want only %q (no temp file)", got, res.ID)
	}
	f, err := a.Open(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	back, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("read back %d bytes (%v), want the %d uploaded", len(back), err, len(data))
	}
	list, err := a.List()
	if err != nil || len(list) != 1 || list[0].ID != res.ID || list[0].Size != res.Size {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := a.Remove(res.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Open(res.ID); !errors.Is(err, staging.ErrNotFound) {
		t.Fatalf("Open after Remove: %v, want ErrNotFound", err)
	}
}

func TestRefusedUploadsLeaveNothing(t *testing.T) {
	data := pattern(1 << 20)
	for _, tc := range []struct {
		name     string
		data     []byte
		wantSize int64
		wantSHA  string
		msg      string
	}{
		{"short", data, int64(len(data)) + 512, "", "announced"},
		{"wrong checksum", data, 0, sum([]byte("other")), "sha256"},
		{"not whole sectors", data[:1000], 0, "", "512-byte sectors"},
		{"empty", nil, 0, "", "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := open(t)
			_, err := upload(t, a, tc.data, tc.wantSize, tc.wantSHA)
			if !errors.Is(err, staging.ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Commit: %v, want ErrInvalid saying %q", err, tc.msg)
			}
			if got := files(t, a); len(got) != 0 {
				t.Fatalf("a refused upload left %q", got)
			}
		})
	}
}

// An interrupted upload (the stream broke: the server aborts) leaves
// nothing; temp files of a crashed process go when the area is opened.
func TestInterruptedUploadLeavesNothing(t *testing.T) {
	a := open(t)
	w, err := a.Create(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pattern(4096)); err != nil {
		t.Fatal(err)
	}
	if got := files(t, a); len(got) != 1 || !strings.HasPrefix(got[0], ".tmp-") {
		t.Fatalf("while writing the directory holds %q, want one temp file", got)
	}
	if l, _ := a.List(); len(l) != 0 {
		t.Fatalf("List shows an upload being written: %+v", l)
	}
	w.Abort()
	if got := files(t, a); len(got) != 0 {
		t.Fatalf("an aborted upload left %q", got)
	}

	// A crash: the temp file stays until the next Open.
	w, err = a.Create(0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(pattern(512))
	if _, err := staging.Open(a.Dir(), staging.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := files(t, a); len(got) != 0 {
		t.Fatalf("Open left the temp file of a crashed upload: %q", got)
	}
}

func TestNoSpaceIsRefusedUpFront(t *testing.T) {
	a := open(t)
	free, err := a.Free()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create(free + 1<<30); !errors.Is(err, staging.ErrNoSpace) {
		t.Fatalf("Create of more than the free space: %v, want ErrNoSpace", err)
	}
	if got := files(t, a); len(got) != 0 {
		t.Fatalf("a refused upload left %q", got)
	}
}

// needQemuImg fails the test when qemu-img is missing: the qcow2 path is
// part of what must be tested.
func needQemuImg(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal("qemu-img not found: install qemu-utils (apt-get install qemu-utils; hack/install-deps.sh does it)")
	}
	return p
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(needQemuImg(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestQcow2IsConvertedToRaw(t *testing.T) {
	dir := t.TempDir()

	// A blank qcow2 made with qemu-img create: 2 MiB of zeros once raw.
	blank := filepath.Join(dir, "blank.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", blank, "2M")
	// One with data: a raw image converted to qcow2.
	raw := pattern(1<<20 + 512)
	rawPath := filepath.Join(dir, "data.raw")
	if err := os.WriteFile(rawPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	withData := filepath.Join(dir, "data.qcow2")
	qemuImg(t, "convert", "-q", "-f", "raw", "-O", "qcow2", rawPath, withData)

	for _, tc := range []struct {
		file string
		want []byte
	}{
		{blank, make([]byte, 2<<20)},
		{withData, raw},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			in, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(in, []byte("QFI\xfb")) {
				t.Fatal("qemu-img made no qcow2")
			}
			a := open(t)
			res, err := upload(t, a, in, int64(len(in)), sum(in))
			if err != nil {
				t.Fatal(err)
			}
			if res.Format != "qcow2" || res.Size != int64(len(tc.want)) || res.SHA256 != sum(tc.want) {
				t.Fatalf("result %+v, want format qcow2, size %d, sha256 %s of the raw image", res, len(tc.want), sum(tc.want))
			}
			f, err := a.Open(res.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			back, _ := io.ReadAll(f)
			if !bytes.Equal(back, tc.want) {
				t.Fatal("the staged bytes are not the raw image")
			}
			if got := files(t, a); len(got) != 1 || got[0] != res.ID {
				t.Fatalf("directory holds %q, want only %q", got, res.ID)
			}
		})
	}
}

// A qcow2 with a backing file would make qemu-img read a file of the
// control plane's host into the image: refused.
func TestQcow2WithBackingFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.raw")
	if err := os.WriteFile(secret, pattern(1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", secret, overlay)
	in, err := os.ReadFile(overlay)
	if err != nil {
		t.Fatal(err)
	}
	a := open(t)
	if _, err := upload(t, a, in, 0, ""); !errors.Is(err, staging.ErrInvalid) || !strings.Contains(err.Error(), "backing file") {
		t.Fatalf("Commit: %v, want ErrInvalid about the backing file", err)
	}
	if got := files(t, a); len(got) != 0 {
		t.Fatalf("a refused upload left %q", got)
	}
}

func TestQcow2WithoutQemuImgSaysInstallQemuUtils(t *testing.T) {
	a, err := staging.Open(t.TempDir(), staging.Options{QemuImg: filepath.Join(t.TempDir(), "no-qemu-img")})
	if err != nil {
		t.Fatal(err)
	}
	in := append([]byte("QFI\xfb"), make([]byte, 1020)...)
	_, err = upload(t, a, in, 0, "")
	if !errors.Is(err, staging.ErrNoQemuImg) || !strings.Contains(err.Error(), "qemu-utils") {
		t.Fatalf("Commit: %v, want ErrNoQemuImg saying to install qemu-utils", err)
	}
	if got := files(t, a); len(got) != 0 {
		t.Fatalf("a refused upload left %q", got)
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"0123456789abcdef0123456789abcdef":  true,
		"0123456789ABCDEF0123456789abcdef":  false,
		"../../etc/passwd":                  false,
		"":                                  false,
		".tmp-0123456789abcdef0123456789ab": false,
	} {
		if staging.ValidID(id) != want {
			t.Errorf("ValidID(%q) = %v", id, !want)
		}
	}
}
