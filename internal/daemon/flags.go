package daemon

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Common are the flags both daemons have.
type Common struct {
	// Config is the YAML configuration file (--config).
	Config string
	// LogFormat is text or json (--log-format).
	LogFormat string
	// LogLevel is debug, info, warn or error (--log-level).
	LogLevel string
	// MetricsListen is the host:port of /healthz, /readyz and /metrics
	// (--metrics-listen); empty turns the endpoint off.
	MetricsListen string
	// Pprof adds /debug/pprof/ to the metrics endpoint (--enable-pprof,
	// where the daemon defines it: AddPprofFlag).
	Pprof bool
	// MemoryRelease is how often the daemon checks whether a burst of
	// work has passed and its free memory should go back to the system
	// (--memory-release-interval, where the daemon defines it:
	// AddMemoryReleaseFlag; internal/memrelease); 0 turns it off.
	MemoryRelease time.Duration
}

// Log formats.
const (
	LogText = "text"
	LogJSON = "json"
)

// AddFlags defines --config, --log-format, --log-level and
// --metrics-listen (defaulting to metricsListen) on fs.
func (c *Common) AddFlags(fs *flag.FlagSet, metricsListen string) {
	c.LogFormat, c.LogLevel, c.MetricsListen = LogText, "info", metricsListen
	fs.StringVar(&c.Config, ConfigFlag, "", "YAML file of settings: keys are these flags' names (e.g. log-level: debug); flags given here override it")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format on stderr: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "host:port serving /healthz, /readyz and Prometheus /metrics over HTTP (empty: off)")
}

// AddPprofFlag defines --enable-pprof on fs.
func (c *Common) AddPprofFlag(fs *flag.FlagSet) {
	fs.BoolVar(&c.Pprof, "enable-pprof", false, "also serve Go's runtime profiles (heap, CPU, goroutines) under /debug/pprof/ on --metrics-listen")
}

// AddMemoryReleaseFlag defines --memory-release-interval on fs.
func (c *Common) AddMemoryReleaseFlag(fs *flag.FlagSet, def time.Duration) {
	c.MemoryRelease = def
	fs.DurationVar(&c.MemoryRelease, "memory-release-interval", def, "how often to check whether a burst of work has passed, and then give the memory it took back to the system at once (one garbage collection; 0: leave it to Go's runtime)")
}

// Logger returns the logger the flags ask for, writing to w.
func (c *Common) Logger(w io.Writer) (*slog.Logger, error) {
	return NewLogger(w, c.LogFormat, c.LogLevel)
}

// NewLogger returns a slog logger in format (text or json) at level.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level=%q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case LogText, "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case LogJSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format=%q: use text or json", format)
	}
}
