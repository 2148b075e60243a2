package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/internal/etcdtest"
)

// snapshot save and restore take their flags before or after the file, as
// etcdutl's documentation and sanbootctl have them.
func TestSnapshotFlagsEitherSide(t *testing.T) {
	m := etcdtest.Start(t)
	if _, err := m.Client(t).Put(context.Background(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "sanboot.snapshot")
	if code := snapshotCmd(nil, nil, []string{"save", snap, "--endpoints", m.Endpoints[0]}); code != 0 {
		t.Fatalf("snapshot save FILE --endpoints URL: exit %d", code)
	}
	for _, tc := range []struct {
		name string
		args func(dir string) []string
	}{
		{"flags after", func(dir string) []string { return []string{snap, "--data-dir", dir, "--name", "cp1"} }},
		{"flags before", func(dir string) []string { return []string{"--data-dir", dir, "--name", "cp1", snap} }},
		{"both sides", func(dir string) []string { return []string{"--name=cp1", snap, "--data-dir=" + dir} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			cfg := controlplane.DefaultConfig()
			fs := flag.NewFlagSet("sanboot-controlplane", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg.Member.AddFlags(fs)
			if code := restoreCmd(fs, &cfg, tc.args(dir)); code != 0 {
				t.Fatalf("restore %q: exit %d", tc.args(dir), code)
			}
			if _, err := os.Stat(filepath.Join(dir, "member", "snap", "db")); err != nil {
				t.Errorf("no restored member in %s: %v", dir, err)
			}
		})
	}
	cfg := controlplane.DefaultConfig()
	fs := flag.NewFlagSet("sanboot-controlplane", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.Member.AddFlags(fs)
	if code := restoreCmd(fs, &cfg, []string{snap, "--data-dir", t.TempDir(), "extra"}); code != 2 {
		t.Errorf("restore with two files: exit %d, want 2 (usage)", code)
	}
}
