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
