// Package zapslog routes the zap logs of etcd (server and client) into a
// log/slog logger, at warn level and above by default, so that the control
// plane writes one log in one format.
package zapslog

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a zap logger that writes to log the entries min enables
// (a zapcore.Level, or a zap.AtomicLevel to change it later), with
// attribute component=etcd.
func New(log *slog.Logger, min zapcore.LevelEnabler) *zap.Logger {
	return zap.New(&core{h: log.Handler(), min: min, full: &sync.Once{}}).With(zap.String("component", "etcd"))
}

type core struct {
	h     slog.Handler
	min   zapcore.LevelEnabler
	attrs []slog.Attr
	full  *sync.Once // says once that the data directory is full
}

func (c *core) Enabled(l zapcore.Level) bool { return c.min.Enabled(l) }

func (c *core) With(fields []zapcore.Field) zapcore.Core {
	return &core{h: c.h, min: c.min, attrs: append(slices.Clip(c.attrs), attrs(fields)...), full: c.full}
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fields []zapcore.Field) error {
	ctx := context.Background()
	lvl := level(e.Level)
	if !c.h.Enabled(ctx, lvl) {
		return nil
	}
	r := slog.NewRecord(e.Time, lvl, e.Message, 0)
	r.AddAttrs(c.attrs...)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	fa := attrs(fields)
	r.AddAttrs(fa...)
	err := c.h.Handle(ctx, r)
	if e.Level >= zapcore.ErrorLevel && noSpace(e.Message, fa) {
		// etcd says ENOSPC in its own words (and a fatal one ends the
		// process): say what it means and what to do.
		c.full.Do(func() {
			r := slog.NewRecord(e.Time, slog.LevelError, NoSpaceMessage, 0)
			r.AddAttrs(slog.String("component", "controlplane"))
			_ = c.h.Handle(ctx, r)
		})
	}
	return err
}

// NoSpaceMessage is logged once when etcd reports that the file system of
// the data directory is full.
const NoSpaceMessage = "the control plane's data directory (--data-dir) is full (no space left on device): etcd cannot write " +
	"its log and stops, and the control plane with it. Free space on that file system (or grow it), then start the control plane " +
	"again: etcd recovers everything it had acknowledged from its write-ahead log"

func noSpace(msg string, as []slog.Attr) bool {
	const enospc = "no space left on device"
	if strings.Contains(msg, enospc) {
		return true
	}
	for _, a := range as {
		if strings.Contains(a.Value.String(), enospc) {
			return true
		}
	}
	return false
}

func (c *core) Sync() error { return nil }

func level(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// attrs encodes zap fields as slog attributes, in key order.
func attrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		out = append(out, slog.Any(k, enc.Fields[k]))
	}
	return out
}
