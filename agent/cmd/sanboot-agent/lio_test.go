package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestLIODump(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir() // an empty LIO: no target, no backstore
	var out bytes.Buffer
	if err := runLIO(ctx, []string{"dump", "--configfs-root", root}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "0 targets, 0 backstores") {
		t.Errorf("dump of an empty LIO:\n%s", out.String())
	}
	err := runLIO(ctx, []string{"dump", "--configfs-root", filepath.Join(root, "missing")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "modprobe") {
		t.Errorf("dump without LIO: %v, want an error that says what to load", err)
	}
	if err := runLIO(ctx, []string{"show"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("lio show: %v, want the usage", err)
	}
}
