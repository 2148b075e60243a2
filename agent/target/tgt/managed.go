package tgt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sanboot/sanboot/api"
)

// SocketDir is where tgtd puts its control sockets (compiled into tgtd).
const SocketDir = "/var/run/tgtd"

const defaultTgtd = "tgtd"

// MaxControlPort is the largest control port tgtd accepts (-C).
const MaxControlPort = 32767

// ManagedConfig describes a tgtd that sanboot runs as its own child
// process (sanboot-agent --tgtd=managed).
type ManagedConfig struct {
	// ControlPort is tgtd's -C: its control socket is
	// /var/run/tgtd/socket.<ControlPort>. 1 to MaxControlPort, so that it
	// never takes the default socket of Debian's tgt service.
	ControlPort int
	// Portals are the ADDR:PORT endpoints tgtd listens on, at least one.
	Portals []string
	// Tgtd is the tgtd executable, "tgtd" (looked up in PATH) if empty.
	Tgtd string
	// Tgtadm is as Config's: a tgtadm to run for every request, or ""
	// for the driver's own requests on the control socket.
	Tgtadm string
	// StartTimeout bounds how long Start waits for tgtd to answer; 30 s if
	// zero.
	StartTimeout time.Duration
	// Log receives tgtd's output (at debug level) and what Managed does;
	// slog.Default() if nil.
	Log *slog.Logger
	// RBD is how the drivers of this tgtd reach Ceph for RBD-backed LUNs.
	RBD RBDConfig
}

// Managed is a tgtd child process. tgtd dies with the process that started
// it (PR_SET_PDEATHSIG), so that a crashed agent leaves no tgtd holding its
// portals and control socket behind.
type Managed struct {
	cfg  ManagedConfig
	adm  *tgtadm
	log  *slog.Logger
	pid  int
	proc *os.Process
	done chan struct{} // closed when tgtd has exited
	// exitErr is tgtd's exit status; read it after done is closed.
	exitErr error
	output  *tail

	stopOnce sync.Once
	stopErr  error
}

// StartManaged starts tgtd with cfg's control port and portals and waits
// until it answers on its control socket. It fails, and leaves nothing
// running, if tgtd or tgtadm is not installed, if a tgtd already uses the
// control port, or if a portal is taken.
func StartManaged(ctx context.Context, cfg ManagedConfig) (*Managed, error) {
	if cfg.ControlPort < 1 || cfg.ControlPort > MaxControlPort {
		return nil, fmt.Errorf("start tgtd: control port %d: use 1 to %d (0 is the socket of Debian's tgt service)", cfg.ControlPort, MaxControlPort)
	}
	if len(cfg.Portals) == 0 {
		return nil, errors.New("start tgtd: no portal: give at least one ADDR:PORT")
	}
	want := make([]netip.AddrPort, 0, len(cfg.Portals))
	for i, p := range cfg.Portals {
		if err := api.ValidatePortal("portals["+strconv.Itoa(i)+"]", p); err != nil {
			return nil, fmt.Errorf("start tgtd: %w", err)
		}
		ap := netip.MustParseAddrPort(p)
		if slices.Contains(want, ap) {
			return nil, fmt.Errorf("start tgtd: portal %s is listed twice", p)
		}
		want = append(want, ap)
	}
	if cfg.Tgtd == "" {
		cfg.Tgtd = defaultTgtd
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	tgtdPath, err := exec.LookPath(cfg.Tgtd)
	if err != nil {
		return nil, fmt.Errorf("start tgtd: %w: install Debian's tgt package (apt-get install tgt)", err)
	}
	tgtadmPath := ""
	if cfg.Tgtadm != "" {
		if tgtadmPath, err = exec.LookPath(cfg.Tgtadm); err != nil {
			return nil, fmt.Errorf("start tgtd: %w: install Debian's tgt package (apt-get install tgt)", err)
		}
	}
	m := &Managed{
		cfg:    cfg,
		adm:    &tgtadm{path: tgtadmPath, controlPort: cfg.ControlPort, timeout: 10 * time.Second},
		log:    cfg.Log.With("tgtd_control_port", cfg.ControlPort),
		done:   make(chan struct{}),
		output: &tail{max: 40},
	}

	// A tgtd that already answers on the port is someone else's.
	if _, err := m.adm.run(ctx, nil, "--mode", "system", "--op", "show"); err == nil {
		return nil, fmt.Errorf("start tgtd: a tgtd already answers on control port %d (%s): pick another --tgt-control-port, or stop that tgtd",
			cfg.ControlPort, m.socket())
	}
	// tgtd falls back to 0.0.0.0:3260 and [::]:3260 when it cannot bind the
	// portals it is given: find a taken portal before it does.
	for _, ap := range want {
		l, err := net.Listen("tcp", ap.String())
		if err != nil {
			return nil, fmt.Errorf("start tgtd: portal %s is taken or not local (%v): another iSCSI target (Debian's tgt service listens on 0.0.0.0:3260) or program uses it; pick another portal or stop it", ap, err)
		}
		l.Close()
	}

	portalArg := make([]string, len(want))
	for i, ap := range want {
		portalArg[i] = "portal=" + ap.String()
	}
	args := []string{"-f", "-C", strconv.Itoa(cfg.ControlPort), "--iscsi", strings.Join(portalArg, ",")}
	if err := m.spawn(tgtdPath, args); err != nil {
		return nil, fmt.Errorf("start tgtd: %w", err)
	}
	m.log.Info("started tgtd", "pid", m.pid, "portals", cfg.Portals)

	if err := m.waitReady(ctx); err != nil {
		m.kill()
		return nil, fmt.Errorf("start tgtd: %w", err)
	}
	served, err := m.servedPortals(ctx)
	if err == nil && !samePortals(served, want) {
		err = fmt.Errorf("tgtd listens on %v instead of %v: a portal was taken when it started (tgtd then falls back to 0.0.0.0:3260); pick free portals", served, want)
	}
	if err != nil {
		m.kill()
		return nil, fmt.Errorf("start tgtd: %w%s", err, m.output.suffix())
	}
	return m, nil
}

// spawn starts tgtd from a goroutine locked to its OS thread: the
// parent-death signal fires when the thread that forked the child exits,
// and that thread stays alive (waiting for tgtd) for as long as tgtd runs.
func (m *Managed) spawn(path string, args []string) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		cmd := exec.Command(path, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		pr, pw, err := os.Pipe()
		if err != nil {
			started <- err
			return
		}
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			pr.Close()
			pw.Close()
			started <- fmt.Errorf("%w: install Debian's tgt package (apt-get install tgt)", err)
			return
		}
		pw.Close()
		m.pid, m.proc = cmd.Process.Pid, cmd.Process
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			m.copyOutput(pr)
		}()
		started <- nil
		err = cmd.Wait()
		<-copied
		pr.Close()
		m.exitErr = err
		close(m.done)
	}()
	return <-started
}

func (m *Managed) copyOutput(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		m.output.add(line)
		m.log.Debug("tgtd", "line", line)
	}
}

func (m *Managed) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
	defer cancel()
	delay := 10 * time.Millisecond
	for {
		_, err := m.adm.run(ctx, nil, "--mode", "system", "--op", "show")
		if err == nil {
			return nil
		}
		select {
		case <-m.done:
			hint := ""
			if os.Geteuid() != 0 {
				hint = " (tgtd needs root)"
			}
			return fmt.Errorf("tgtd exited at start: %v%s%s", m.exitErr, hint, m.output.suffix())
		case <-ctx.Done():
			return fmt.Errorf("tgtd did not answer on control port %d: %w (last: %v)%s", m.cfg.ControlPort, ctx.Err(), err, m.output.suffix())
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func (m *Managed) servedPortals(ctx context.Context) ([]netip.AddrPort, error) {
	out, err := m.adm.run(ctx, nil, "--lld", "iscsi", "--mode", "portal", "--op", "show")
	if err != nil {
		return nil, err
	}
	return parsePortals(out)
}

func samePortals(a, b []netip.AddrPort) bool {
	key := func(p []netip.AddrPort) []string {
		s := make([]string, len(p))
		for i, x := range p {
			s[i] = x.String()
		}
		slices.Sort(s)
		return s
	}
	return slices.Equal(key(a), key(b))
}

// ControlPort is tgtd's control port, for Config.
func (m *Managed) ControlPort() int { return m.cfg.ControlPort }

// Driver returns a driver for this tgtd.
func (m *Managed) Driver() *Driver {
	return New(Config{ControlPort: m.cfg.ControlPort, Tgtadm: m.adm.path, Log: m.cfg.Log, RBD: m.cfg.RBD})
}

// PID is tgtd's process id.
func (m *Managed) PID() int { return m.pid }

// Done is closed when tgtd has exited, whoever stopped it.
func (m *Managed) Done() <-chan struct{} { return m.done }

// Stop deletes every target (forcibly, dropping sessions), asks tgtd to
// exit (tgtadm --mode system --op delete; tgtd ignores SIGTERM) and waits
// for it. When ctx ends first, or tgtd does not go, it kills tgtd. It
// removes the control socket files. Calling it again returns the first
// result.
func (m *Managed) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() { m.stopErr = m.stop(ctx) })
	return m.stopErr
}

func (m *Managed) stop(ctx context.Context) error {
	select {
	case <-m.done:
		m.removeSocket()
		return fmt.Errorf("tgtd (pid %d) had exited already: %v%s", m.pid, m.exitErr, m.output.suffix())
	default:
	}
	var errs []error
	d := New(Config{ControlPort: m.cfg.ControlPort, Tgtadm: m.adm.path, Log: m.cfg.Log, RBD: m.cfg.RBD})
	if targets, err := d.showTargets(ctx); err != nil {
		errs = append(errs, fmt.Errorf("list targets: %w", err))
	} else {
		st := &state{targets: targets}
		for i := range st.targets {
			tg := &st.targets[i]
			// No CHAP bookkeeping: the accounts die with tgtd.
			if err := d.closeACL(ctx, tg); err != nil {
				errs = append(errs, err)
			}
			if err := d.forceDelete(ctx, tg); err != nil {
				errs = append(errs, fmt.Errorf("delete target %s: %w", tg.IQN, err))
			}
		}
	}
	if _, err := m.adm.run(ctx, nil, "--mode", "system", "--op", "delete"); err != nil {
		errs = append(errs, fmt.Errorf("ask tgtd to exit: %w", err))
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("tgtd (pid %d) did not exit: %w; killed it", m.pid, ctx.Err()))
		m.kill()
	case <-time.After(30 * time.Second):
		errs = append(errs, fmt.Errorf("tgtd (pid %d) did not exit within 30 s; killed it", m.pid))
		m.kill()
	}
	m.removeSocket()
	if len(errs) == 0 {
		m.log.Info("stopped tgtd", "pid", m.pid)
	}
	return errors.Join(errs...)
}

// kill kills tgtd (it is our child) and waits for it.
func (m *Managed) kill() {
	if m.proc != nil {
		_ = m.proc.Kill()
	}
	<-m.done
	m.removeSocket()
}

func (m *Managed) socket() string {
	return filepath.Join(SocketDir, "socket."+strconv.Itoa(m.cfg.ControlPort))
}

// removeSocket removes the socket files tgtd leaves behind.
func (m *Managed) removeSocket() {
	for _, p := range []string{m.socket(), m.socket() + ".lock"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("could not remove tgtd's socket file", "path", p, "err", err)
		}
	}
}

// tail keeps the last lines of tgtd's output for error messages.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// suffix is ": tgtd said: ..." or "".
func (t *tail) suffix() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return "; tgtd said:\n  " + strings.Join(t.lines, "\n  ")
}
