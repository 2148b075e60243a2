package zapslog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestRoutesAtOrAboveMin(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := New(log, zapcore.WarnLevel).Named("raft").With(zap.String("member", "m1"))
	z.Info("chatty")
	z.Warn("slow fsync", zap.Duration("took", 3), zap.Error(errors.New("disk")))
	out := buf.String()
	if strings.Contains(out, "chatty") {
		t.Errorf("info entry was routed below the warn minimum:\n%s", out)
	}
	for _, want := range []string{"level=WARN", `msg="slow fsync"`, "component=etcd", "member=m1", "logger=raft", "took=3ns", "error=disk"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// etcd's words for a full data directory (here as its WAL reports them)
// get the control plane's own message, once.
func TestFullDiskIsExplained(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	z := New(log, zapcore.WarnLevel)
	enospc := errors.New("write /var/lib/sanboot/member/wal/0.tmp: no space left on device")
	z.Warn("slow fsync", zap.Error(errors.New("disk")))
	if strings.Contains(buf.String(), "is full") {
		t.Fatalf("a full-disk message without ENOSPC:\n%s", buf.String())
	}
	z.Error("failed to save Raft hard state and entries", zap.Error(enospc))
	z.Named("wal").Error("failed to write", zap.Error(enospc))
	out := buf.String()
	if n := strings.Count(out, "data directory (--data-dir) is full"); n != 1 {
		t.Fatalf("%d full-disk messages, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "start the control plane again") {
		t.Errorf("the message does not say what to do:\n%s", out)
	}
}
