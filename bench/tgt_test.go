package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/target/tgt"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/daemon/daemontest"
	"github.com/sanboot/sanboot/internal/looptest"
	"github.com/sanboot/sanboot/internal/tgttest"
)

// BenchmarkProvisionTgt creates tgtNodes nodes at once, then soloNodes
// one at a time.
const (
	tgtNodes  = 200
	soloNodes = 9
)

// BenchmarkProvisionTgt: 200 nodes through a real control plane and an
// agent with the tgt driver (its own tgtd) and a reflink XFS store, from a
// small uploaded image; then 9 more, one at a time (the latency of a node
// alone); against the bare tgtadm calls that make 200 targets on a fresh
// tgtd in the same run; then `sanbootctl apply -f FILE --wait` of an image
// and 200 nodes in another project, the way users provision.
func BenchmarkProvisionTgt(b *testing.B) {
	sys, host := startTgtSystem(b, 2<<30)
	for i := range b.N {
		project := "tgt-" + strconv.Itoa(i)
		// 64 MiB, 4 MiB of it data: a small real image (reflink clones
		// cost the same whatever its size; BenchmarkCloneBySize in
		// agent/store/filestore shows it).
		sys.uploadImage(b, project, "golden", 64<<20, 4<<20)
		took, lat := sys.provision(b, project, "golden", "n-", tgtNodes)
		checkReflink(b, sys, project)
		// Then nodes one at a time, beside the 200: the latency of a node
		// that waits for no other.
		var solo []time.Duration
		for k := range soloNodes {
			_, l := sys.provision(b, project, "golden", fmt.Sprintf("solo%d-", k), 1)
			solo = append(solo, l[0])
		}
		slices.Sort(solo)

		disks := make([]string, tgtNodes)
		for n := range disks {
			disks[n] = filepath.Join(host.store, "disks", project, fmt.Sprintf("n-%d.raw", n))
		}
		raw := rawTgtadm(b, project, disks)

		// The user's path: `sanbootctl apply -f FILE --wait` of a blank
		// 64 MiB image and 200 nodes, in a project of their own (the
		// store keeps room for each disk to fill up).
		applyProject := "tgt-apply-" + strconv.Itoa(i)
		file := filepath.Join(b.TempDir(), applyProject+".yaml")
		writeFleetSized(b, file, applyProject, tgtNodes, 64<<20)
		// Its parts: until the last object is written (the last line
		// before the wait's), until the image is Ready (the wait's first
		// line), and the rest: the nodes' wait.
		var written, imageReady time.Duration
		requests0 := sys.targetRequests(b)
		applied, _ := sys.ctlWatch(b, func(line []byte, at time.Duration) {
			if imageReady == 0 {
				if bytes.HasSuffix(line, []byte(" ready")) {
					imageReady = at
				} else {
					written = at
				}
			}
		}, "apply", "-f", file, "--wait", "--timeout", "10m")
		// tgtd requests a node, listings and health checks included.
		requests := float64(sys.targetRequests(b)-requests0) / tgtNodes

		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		b.ReportMetric(float64(took.Milliseconds()), "ms/200nodes")
		b.ReportMetric(ms(took)/tgtNodes, "ms/node")
		b.ReportMetric(ms(p50), "p50-ms")
		b.ReportMetric(ms(p99), "p99-ms")
		b.ReportMetric(ms(solo[len(solo)/2]), "solo-p50-ms")
		b.ReportMetric(float64(raw.Milliseconds()), "raw-tgtadm-ms")
		b.ReportMetric(float64(took)/float64(raw), "ratio-to-raw")
		b.ReportMetric(ms(applied), "apply-wait-200-ms")
		b.ReportMetric(ms(written), "apply-written-ms")
		b.ReportMetric(ms(imageReady), "apply-image-ready-ms")
		b.ReportMetric(requests, "apply-tgtd-requests/node")
		b.Logf("%d nodes Ready in %v (%.1f ms a node; p50 %v, p99 %v); then %d nodes one at a time: p50 %v (%v to %v); "+
			"the same %d targets with bare tgtadm (target new, LUN new, bind): %v (%.1f ms a target); ratio %.2f; "+
			"sanbootctl apply -f --wait of an image and %d nodes: %v (every object written after %v, the image Ready after %v; %.2f tgtd requests a node)",
			tgtNodes, took.Round(time.Millisecond), ms(took)/tgtNodes, p50.Round(time.Millisecond), p99.Round(time.Millisecond),
			soloNodes, solo[len(solo)/2].Round(time.Millisecond), solo[0].Round(time.Millisecond), solo[len(solo)-1].Round(time.Millisecond),
			tgtNodes, raw.Round(time.Millisecond), ms(raw)/tgtNodes, float64(took)/float64(raw), tgtNodes, applied.Round(time.Millisecond),
			written.Round(time.Millisecond), imageReady.Round(time.Millisecond), requests)
	}
}

// tgtHost is where a tgt agent keeps its disks and serves them.
type tgtHost struct {
	store  string // --store-dir, on a reflink XFS loop mount
	portal string // --portal
}

// startTgtSystem starts a control plane and an agent with --driver=tgt and
// a managed tgtd on a free loopback portal and control port; its store is
// an XFS (reflink=1) of storeSize bytes on a loop device.
func startTgtSystem(b *testing.B, storeSize int64) (*system, tgtHost) {
	b.Helper()
	requireTools(b, "this benchmark runs a real tgtd and mounts XFS on a loop device",
		tool{"tgtd", "tgt"}, tool{"tgtadm", "tgt"}, tool{"mkfs.xfs", "xfsprogs"}, tool{"losetup", "util-linux"})
	host := tgtHost{
		store:  filepath.Join(looptest.Mount(b, looptest.XFS, storeSize), "store"),
		portal: tgttest.FreePortal(b),
	}
	sys := startSystem(b, "--driver", "tgt", "--tgtd", "managed", "--tgtd-control", strconv.Itoa(tgttest.FreeControlPort(b)),
		"--portal", host.portal, "--store-dir", host.store, "--workers", "16")
	a, err := sys.api.GetAgent(context.Background(), &sanbootv1.GetAgentRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if m := a.GetRecord().GetCloneMode(); m != "reflink" {
		b.Fatalf("the agent's store on XFS reports clone mode %q, want reflink: is mkfs.xfs new enough for -m reflink=1?", m)
	}
	return sys, host
}

// targetRequests is how many requests the agent's tgt driver has made to
// tgtd (its sanboot_target_requests_total).
func (s *system) targetRequests(b *testing.B) float64 {
	b.Helper()
	fams, err := daemontest.Scrape(s.agentMetrics)
	if err != nil {
		b.Fatalf("scrape the agent's metrics: %v", err)
	}
	v, ok := daemontest.Value(fams, "sanboot_target_requests_total", nil)
	if !ok {
		b.Fatalf("the agent exports no sanboot_target_requests_total: is its driver tgt?")
	}
	return v
}

// checkReflink fails the benchmark unless the project's first node's disk
// is a reflink clone: that is what the figures are about.
func checkReflink(b *testing.B, sys *system, project string) {
	b.Helper()
	n, err := sys.api.GetNode(context.Background(), &sanbootv1.GetRequest{Project: project, Name: "n-0"})
	if err != nil {
		b.Fatal(err)
	}
	if m := n.GetStatus().GetCloneMode(); m != "reflink" {
		b.Fatalf("node n-0's disk was cloned by %q, want reflink", m)
	}
}

// rawTgtadm starts a fresh tgtd and times the bare tgtadm calls that serve
// each of disks as a target (target new, LUN new, bind an initiator), one
// after the other, as the lab measured them. tgtd is stopped (every target
// deleted) before it returns.
func rawTgtadm(b *testing.B, project string, disks []string) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	port := tgttest.FreeControlPort(b)
	m, err := tgt.StartManaged(ctx, tgt.ManagedConfig{ControlPort: port, Portals: []string{tgttest.FreePortal(b)}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatalf("start a tgtd for the bare tgtadm calls: %v", err)
	}
	defer func() {
		if err := m.Stop(ctx); err != nil {
			b.Errorf("stop the bare tgtd: %v", err)
		}
	}()
	adm := func(args ...string) {
		out, err := exec.CommandContext(ctx, "tgtadm", append([]string{"-C", strconv.Itoa(port), "--lld", "iscsi"}, args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("tgtadm %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	begin := time.Now()
	for i, disk := range disks {
		tid := strconv.Itoa(i + 1)
		node := strings.TrimSuffix(filepath.Base(disk), ".raw")
		adm("--mode", "target", "--op", "new", "--tid", tid, "--targetname", api.TargetIQN("", project, node))
		adm("--mode", "logicalunit", "--op", "new", "--tid", tid, "--lun", "1", "--bstype", "rdwr", "--backing-store", disk)
		adm("--mode", "target", "--op", "bind", "--tid", tid, "--initiator-name", api.DefaultInitiatorIQN(project, node))
	}
	return time.Since(begin)
}

// readImageSize is the size of BenchmarkISCSIRead's image, all of it
// pseudo-random data.
const readImageSize = 512 << 20

// BenchmarkISCSIRead reads a provisioned node's disk sequentially through
// its iSCSI target (the agent's tgtd, loopback) and directly from the disk
// file, with the same program (qemu-img bench: 1 MiB requests, 8 in
// flight), and reports both rates and their ratio. "warm": the file is in
// the page cache for both (it is read once first; tgtd's rdwr backing store
// reads through the same cache). "cold": the caches are dropped before
// every read, which then reads the disk once.
func BenchmarkISCSIRead(b *testing.B) {
	requireTools(b, "this benchmark reads through iSCSI with qemu-img",
		tool{"qemu-img", "qemu-utils (and qemu-block-extra for iscsi://)"})
	sys, host := startTgtSystem(b, 2<<30)
	const project = "read"
	sys.uploadImage(b, project, "data", readImageSize, readImageSize)
	sys.provision(b, project, "data", "n-", 1)
	checkReflink(b, sys, project)
	n, err := sys.api.GetNode(context.Background(), &sanbootv1.GetRequest{Project: project, Name: "n-0"})
	if err != nil {
		b.Fatal(err)
	}
	st := n.GetStatus()
	iscsi := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,initiator-name=%s",
		st.GetPortals()[0], st.GetTargetIqn(), st.GetLun(), api.DefaultInitiatorIQN(project, "n-0"))
	disk := filepath.Join(host.store, "disks", project, "n-0.raw")
	file := "driver=file,filename=" + disk

	for _, tc := range []struct {
		name     string
		requests int          // of 1 MiB; past the disk's end qemu-img wraps to its start
		before   func() error // before every read
	}{
		{"warm", 4 * readImageSize >> 20, func() error { return readAll(disk) }},
		{"cold", readImageSize >> 20, dropCaches},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				// Interleaved, three of each: both see the same machine.
				var viaISCSI, direct []float64
				for range 3 {
					for _, r := range []struct {
						opts string
						to   *[]float64
					}{{iscsi, &viaISCSI}, {file, &direct}} {
						if err := tc.before(); err != nil {
							b.Fatal(err)
						}
						*r.to = append(*r.to, qemuBench(b, r.opts, tc.requests))
					}
				}
				mi, md := median(viaISCSI), median(direct)
				b.ReportMetric(mi, "iscsi-MiB/s")
				b.ReportMetric(md, "direct-MiB/s")
				b.ReportMetric(mi/md, "ratio")
				b.Logf("%s: iSCSI %.0f MiB/s (runs %.0f), direct %.0f MiB/s (runs %.0f): ratio %.2f",
					tc.name, mi, viaISCSI, md, direct, mi/md)
				if tc.name == "warm" {
					// The ceiling of any one-connection transport here.
					tcp := loopbackTCP(b, int64(tc.requests)<<20)
					b.ReportMetric(tcp, "tcp-MiB/s")
					b.Logf("one loopback TCP connection carries %.0f MiB/s; iSCSI gets %.2f of it", tcp, mi/tcp)
				}
			}
		})
	}
}

// loopbackTCP sends n bytes over one loopback TCP connection in 1 MiB
// writes and returns the rate in MiB/s.
func loopbackTCP(b *testing.B, n int64) float64 {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	sent := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		for left := n; left > 0; left -= int64(len(buf)) {
			if _, err := c.Write(buf[:min(int64(len(buf)), left)]); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	c, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	begin := time.Now()
	var got int64
	for got < n {
		k, err := c.Read(buf)
		got += int64(k)
		if err != nil {
			b.Fatalf("loopback TCP: read after %d bytes: %v", got, err)
		}
	}
	took := time.Since(begin)
	if err := <-sent; err != nil {
		b.Fatalf("loopback TCP: %v", err)
	}
	return float64(n) / (1 << 20) / took.Seconds()
}

var qemuBenchTime = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// qemuBench runs qemu-img bench (sequential reads of 1 MiB, 8 in flight)
// on the image opts names and returns the rate in MiB/s.
func qemuBench(b *testing.B, opts string, requests int) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-img", "bench", "--image-opts", "-c", strconv.Itoa(requests),
		"-s", "1M", "-d", "8", opts).CombinedOutput()
	if err != nil {
		hint := ""
		if strings.HasPrefix(opts, "driver=iscsi") {
			hint = " (qemu-img reads iscsi:// with Debian's qemu-block-extra: install it if the driver is unknown)"
		}
		b.Fatalf("qemu-img bench %s: %v%s: %s", opts, err, hint, out)
	}
	m := qemuBenchTime.FindSubmatch(out)
	if m == nil {
		b.Fatalf("qemu-img bench printed no run time: %s", out)
	}
	secs, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || secs <= 0 {
		b.Fatalf("qemu-img bench: run time %q: %v", m[1], err)
	}
	return float64(requests) / secs
}

func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// readAll reads a file once, to have it in the page cache.
func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// dropCaches writes dirty pages back and drops the whole machine's clean
// page cache (root only).
func dropCaches() error {
	if out, err := exec.Command("sync").CombinedOutput(); err != nil {
		return fmt.Errorf("sync: %v: %s", err, out)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		return fmt.Errorf("drop the page cache: %w (needs root)", err)
	}
	return nil
}

type tool struct{ name, pkg string }

// requireTools fails the benchmark, saying what to install, unless it runs
// as root and every tool is in PATH: it never skips.
func requireTools(b *testing.B, why string, tools ...tool) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Fatalf("%s, which needs root: run the benchmarks as root (make bench does as root)", why)
	}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t.name); err != nil {
			missing = append(missing, t.name+" (Debian: "+t.pkg+")")
		}
	}
	if len(missing) > 0 {
		b.Fatalf("%s; missing: %s: run hack/install-deps.sh", why, strings.Join(missing, ", "))
	}
}
