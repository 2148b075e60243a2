package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress counts the bytes of a transfer. On a terminal (Env.Terminal
// says stderr is one) it draws a bar on stderr with the bytes done, the
// rate and the time left; otherwise it prints nothing, so that scripts and
// logs stay clean.
type progress struct {
	bar   *progressbar.ProgressBar // nil when quiet
	known bool                     // the size is known
}

// newProgress starts a progress report for a transfer of size bytes
// (size <= 0: unknown, a spinner with the bytes and rate).
func (s *session) newProgress(size int64, what string) *progress {
	if s.env.Terminal == nil || !s.env.Terminal(s.env.Stderr) {
		return &progress{}
	}
	if size <= 0 {
		size = -1
	}
	w := s.env.Stderr
	return &progress{known: size > 0, bar: progressbar.NewOptions64(size,
		progressbar.OptionSetDescription(what),
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)}
}

// Write counts len(p) bytes done.
func (p *progress) Write(b []byte) (int, error) {
	if p.bar != nil {
		p.bar.Add64(int64(len(b)))
	}
	return len(b), nil
}

// done ends the bar: finished (ok) or left where it stopped.
func (p *progress) done(ok bool) {
	if p.bar == nil {
		return
	}
	if ok && p.known {
		p.bar.Finish() // ends the line
		return
	}
	p.bar.Exit() // ends the line where the bar stopped
}

var _ io.Writer = (*progress)(nil)
