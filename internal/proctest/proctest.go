// Package proctest starts real programs for tests and benchmarks: each runs
// in a process of its own, its output appended to a log file whose end is
// printed when the test fails, and it is stopped (signal, then SIGKILL after
// a bound) when the test ends.
package proctest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Options says what to run and how to stop it.
type Options struct {
	Dir  string   // the log goes to Dir/Name.log (appended to: a program started again keeps one log)
	Name string   // names the log and the process in messages
	Path string   // the program
	Args []string // its arguments
	Env  []string // added to this process's environment ("KEY=value")

	StopSignal os.Signal     // sent by Stop; SIGINT if nil
	StopWithin time.Duration // Stop sends SIGKILL after this long; a minute if 0
	TailLines  int           // lines of the log printed when the test fails; 40 if 0
	KeepLogIn  string        // if set, the log is copied into this directory when the test ends
}

// Proc is a running (or ended) program started by Start.
type Proc struct {
	t    testing.TB
	o    Options
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Start runs a program until the test ends, when Stop is called on it.
func Start(t testing.TB, o Options) *Proc {
	t.Helper()
	if o.StopSignal == nil {
		o.StopSignal = os.Interrupt
	}
	if o.StopWithin == 0 {
		o.StopWithin = time.Minute
	}
	if o.TailLines == 0 {
		o.TailLines = 40
	}
	p := &Proc{t: t, o: o, log: filepath.Join(o.Dir, o.Name+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("log of %s: %v", o.Name, err)
	}
	p.cmd = exec.Command(o.Path, o.Args...)
	if o.Env != nil {
		p.cmd.Env = append(os.Environ(), o.Env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s (%s): %v", o.Name, o.Path, err)
	}
	go func() { p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if o.KeepLogIn != "" {
			out, _ := os.ReadFile(p.log)
			os.WriteFile(filepath.Join(o.KeepLogIn, o.Name+".log"), out, 0o644)
		}
		if t.Failed() {
			t.Logf("log of %s (tail):\n%s", o.Name, Tail(p.Log(), o.TailLines))
		}
	})
	return p
}

// Stop sends the stop signal and waits for the process to end, sending
// SIGKILL (and failing the test) if it has not ended in time. A process
// already gone is left alone.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(p.o.StopSignal)
	select {
	case <-p.done:
	case <-time.After(p.o.StopWithin):
		p.t.Errorf("%s did not stop within %v of %v: killed", p.o.Name, p.o.StopWithin, p.o.StopSignal)
		p.Kill()
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Signal sends sig to the process, without waiting.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitCode is the process's exit status once Done is closed (-1 if a
// signal ended it).
func (p *Proc) ExitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// LogPath is the file the process writes its output to.
func (p *Proc) LogPath() string { return p.log }

// Log is what the process has written so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
