package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/controlplane/backup"
)

// sanbootctl backup writes an etcd snapshot that etcd's own tools read
// back, with the revision and sha256 it printed; it never overwrites a file.
func TestBackupThroughTheAPI(t *testing.T) {
	s := start(t)
	s.ctl("image", "create", "golden", "--size", "4MiB")
	file := filepath.Join(t.TempDir(), "backup.db")
	out := s.ctl("backup", file)

	info, err := backup.Status(file)
	if err != nil {
		t.Fatalf("the backup is not a readable etcd snapshot: %v", err)
	}
	if info.Keys == 0 {
		t.Errorf("the backup holds no keys: %+v", info)
	}
	for _, want := range []string{fmt.Sprintf("revision %d,", info.Revision), "sha256 " + info.SHA256} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q does not say %q", out, want)
		}
	}
	if b, err := os.ReadFile(file); err != nil || !strings.Contains(string(b), "/sanboot/v1/images/default/golden") {
		t.Errorf("the backup does not hold the image record (read error %v)", err)
	}

	before, _ := os.ReadFile(file)
	if code, _, stderr := s.run("backup", file); code == 0 || !strings.Contains(stderr, "exists") {
		t.Errorf("a second backup to the same file: exit %d, %q", code, stderr)
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Errorf("the refused backup changed the file")
	}
}
