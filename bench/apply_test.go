package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkApply: `sanbootctl apply -f FILE --wait` of 1,000 and 10,000
// new nodes (one image, the agent with the fake driver), the program and
// the daemons as users run them; then the same apply again (every node
// unchanged) and `diff -f` of the file. It reports the times, the etcd
// write txns the first apply needed and the CPU time each process spent
// on it, the time of one compare-and-put txn
// per node on a raw embedded etcd in the same run and the ratio, and the
// control plane's and the agent's resident memory.
func BenchmarkApply(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			dir := b.TempDir()
			sys := startSystem(b, "--driver", "fake", "--store-dir", filepath.Join(dir, "store"), "--workers", "16")
			for i := range b.N {
				project := fmt.Sprintf("bench-%d-%d", n, i)
				file := filepath.Join(dir, project+".yaml")
				writeFleet(b, file, project, n)

				rev0 := sys.revision(b)
				cp0, agent0 := cpuTime(b, sys.controlPlane), cpuTime(b, sys.agent)
				// first: until the first line (the image's result: the
				// manifest loaded, the image written); written: until
				// the last node's result (every node written);
				// firstReady: until the wait's first line (its watch
				// caught up with the writes, the image Ready).
				var first, written, firstReady time.Duration
				took, ctlCPU := sys.ctlWatch(b, func(line []byte, at time.Duration) {
					if first == 0 {
						first = at
					}
					switch {
					case firstReady != 0:
					case bytes.HasSuffix(line, []byte(" ready")):
						firstReady = at
					default:
						written = at
					}
				}, "apply", "-f", file, "--wait", "--timeout", "30m")
				txns := sys.revision(b) - rev0
				// CPU time each process spent on the apply: counts that a
				// loaded machine disturbs less than the wall time.
				cpCPU, agentCPU := cpuTime(b, sys.controlPlane)-cp0, cpuTime(b, sys.agent)-agent0
				// The baseline: one compare-and-put per node, what writing
				// each node with its own comparison costs on etcd alone.
				raw := rawEtcd(b, n, concurrency)
				// Unchanged apply and diff: the fastest of three runs each,
				// wall time and sanbootctl's CPU time (user and system):
				// on a shared machine the wall time is mostly waiting for a
				// core.
				rev1 := sys.revision(b)
				profile := fmt.Sprintf("apply-%d-%d", n, i)
				// Before the unchanged applies and diffs: its MemStats'
				// TotalAlloc against the one after is what they allocated.
				sys.saveHeap(b, profile+"-before-unchanged.heap.txt", "debug=1")
				cp1 := cpuTime(b, sys.controlPlane)
				again, againCPU := sys.fastest(b, "apply", "-f", file)
				if rev := sys.revision(b); rev != rev1 {
					b.Fatalf("the unchanged apply moved etcd's revision from %d to %d; keys written since (a deleted one is not listed): %v",
						rev1, rev, sys.writtenSince(b, rev1))
				}
				diff, diffCPU := sys.fastest(b, "diff", "-f", file)
				// The control plane's CPU over the three unchanged applies
				// and three diffs.
				unchangedCPCPU := cpuTime(b, sys.controlPlane) - cp1
				cpRSS, agentRSS := rssMiB(b, sys.controlPlane), rssMiB(b, sys.agent)
				cpAnon := anonMiB(b, sys.controlPlane)
				sys.saveHeap(b, profile+"-after.heap.txt", "debug=1")
				// At rest: what the member holds once the burst has
				// passed (it gives memory back a few seconds after one:
				// --memory-release-interval).
				time.Sleep(restAfter)
				cpRest, cpRestAnon := rssMiB(b, sys.controlPlane), anonMiB(b, sys.controlPlane)
				sys.saveHeap(b, profile+"-rest.heap.txt", "debug=1")
				sys.saveHeap(b, profile+".heap.pb.gz", "gc=1")
				st, err := sys.etcd.Status(context.Background(), sys.etcd.Endpoints()[0])
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(st.RaftIndex), "raft-index")

				b.ReportMetric(ms(took), "apply-wait-ms")
				b.ReportMetric(ms(first), "apply-first-line-ms")
				b.ReportMetric(ms(written), "apply-written-ms")
				b.ReportMetric(ms(firstReady), "apply-first-ready-ms")
				b.ReportMetric(float64(txns), "etcd-txns")
				b.ReportMetric(ms(cpCPU), "apply-controlplane-cpu-ms")
				b.ReportMetric(ms(agentCPU), "apply-agent-cpu-ms")
				b.ReportMetric(ms(ctlCPU), "apply-sanbootctl-cpu-ms")
				b.ReportMetric(ms(raw), "raw-etcd-ms")
				b.ReportMetric(float64(took)/float64(raw), "ratio-to-raw")
				b.ReportMetric(ms(again), "unchanged-apply-ms")
				b.ReportMetric(ms(againCPU), "unchanged-apply-cpu-ms")
				b.ReportMetric(ms(diff), "diff-ms")
				b.ReportMetric(ms(diffCPU), "diff-cpu-ms")
				b.ReportMetric(ms(unchangedCPCPU), "unchanged-controlplane-cpu-ms")
				b.ReportMetric(cpRSS, "controlplane-MiB")
				b.ReportMetric(cpAnon, "controlplane-anon-MiB")
				b.ReportMetric(cpRest, "controlplane-rest-MiB")
				b.ReportMetric(cpRestAnon, "controlplane-rest-anon-MiB")
				b.ReportMetric(agentRSS, "agent-MiB")
				b.Logf("apply -f --wait of %d new nodes: %v (first line after %v, all written after %v, first ready line after %v) (%d etcd write txns; CPU: control plane %v, agent %v, sanbootctl %v); %d compare-and-puts on raw etcd %v, ratio %.2f; "+
					"unchanged apply %v (%v of sanbootctl CPU), diff %v (%v CPU), control plane CPU over 3 of each %v; RSS control plane %.0f MiB (%.0f MiB anonymous), %v later %.0f MiB (%.0f), agent %.0f MiB",
					n, took.Round(time.Millisecond), first.Round(time.Millisecond), written.Round(time.Millisecond), firstReady.Round(time.Millisecond), txns, cpCPU, agentCPU, ctlCPU.Round(time.Millisecond), n, raw.Round(time.Millisecond), float64(took)/float64(raw),
					again.Round(time.Millisecond), againCPU.Round(time.Millisecond), diff.Round(time.Millisecond), diffCPU.Round(time.Millisecond), unchangedCPCPU.Round(time.Millisecond),
					cpRSS, cpAnon, restAfter, cpRest, cpRestAnon, agentRSS)
			}
		})
	}
}

// writeFleet writes a 1 GiB image and n nodes of project as one manifest.
func writeFleet(b *testing.B, file, project string, n int) {
	writeFleetSized(b, file, project, n, 1<<30)
}

// writeFleetSized writes an image of size bytes and n nodes of project as
// one manifest.
func writeFleetSized(b *testing.B, file, project string, n int, size int64) {
	b.Helper()
	var w bytes.Buffer
	fmt.Fprintf(&w, "apiVersion: sanboot.io/v1\nkind: Image\nmetadata: {name: golden, project: %s}\nspec: {sizeBytes: %d}\n", project, size)
	for i := range n {
		fmt.Fprintf(&w, "---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: n-%05d, project: %s, labels: {rack: r%02d}}\nspec: {image: golden}\n", i, project, i%40)
	}
	if err := os.WriteFile(file, w.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
}

// writtenSince lists the keys etcd holds that were written after rev.
func (s *system) writtenSince(b *testing.B, rev int64) []string {
	resp, err := s.etcd.Get(context.Background(), "/", clientv3.WithPrefix(), clientv3.WithMinModRev(rev+1), clientv3.WithKeysOnly())
	if err != nil {
		b.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// fastest runs sanbootctl three times and returns the shortest wall time
// and the shortest CPU time.
func (s *system) fastest(b *testing.B, args ...string) (wall, cpu time.Duration) {
	b.Helper()
	for i := range 3 {
		w, c := s.ctl(b, args...)
		if i == 0 || w < wall {
			wall = w
		}
		if i == 0 || c < cpu {
			cpu = c
		}
	}
	return wall, cpu
}

// ctl runs sanbootctl against the system and returns how long it took and
// the CPU time it used (user and system); it fails the benchmark unless
// sanbootctl exits 0.
func (s *system) ctl(b *testing.B, args ...string) (wall, cpu time.Duration) {
	b.Helper()
	return s.ctlWatch(b, nil, args...)
}

// ctlWatch is ctl that calls seen (if not nil) with each line sanbootctl
// writes to its standard output (without its newline) and the time since
// the start. Per line, not the output so far: searching all of 10,000
// nodes' output at each of their lines took the benchmark ~0.6 s of CPU,
// on the cores the measured programs share.
func (s *system) ctlWatch(b *testing.B, seen func(line []byte, at time.Duration), args ...string) (wall, cpu time.Duration) {
	b.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "sanbootctl"), append([]string{"--endpoints", strings.Join(s.apiAddrs(), ",")}, args...)...)
	var out, errOut bytes.Buffer
	begin := time.Now()
	cmd.Stdout, cmd.Stderr = &watchedWriter{buf: &out, seen: seen, begin: begin}, &errOut
	cmd.Env = append(os.Environ(), "HOME="+s.dir)
	err := cmd.Run()
	took := time.Since(begin)
	if err != nil {
		b.Fatalf("sanbootctl %s: %v\nstderr (end): %s", strings.Join(args, " "), err, tail(errOut.String(), 2000))
	}
	return took, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// watchedWriter appends to buf and shows seen each line it completes.
type watchedWriter struct {
	buf   *bytes.Buffer
	seen  func(line []byte, at time.Duration)
	begin time.Time
	done  int // buf[:done] is lines seen has been shown
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	if w.seen == nil {
		return n, err
	}
	at := time.Since(w.begin)
	for {
		rest := w.buf.Bytes()[w.done:]
		end := bytes.IndexByte(rest, '\n')
		if end < 0 {
			return n, err
		}
		w.seen(rest[:end], at)
		w.done += end + 1
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// cpuTime is the CPU time (user and system) process pid has used, to the
// kernel's clock tick (10 ms).
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command (in parentheses, which may hold
	// spaces): utime and stime are the 14th and 15th of the whole line.
	_, rest, _ := bytes.Cut(stat, []byte(") "))
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, stat)
	}
	var ticks int64
	for _, v := range f[11:13] {
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += t
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// rssMiB is a process's resident set size (VmRSS: its heap and stacks,
// and the pages of files it maps, such as etcd's database).
func rssMiB(b *testing.B, pid int) float64 { return procStatusMiB(b, pid, "VmRSS:") }

// anonMiB is the part of a process's RSS that no file backs (RssAnon).
func anonMiB(b *testing.B, pid int) float64 { return procStatusMiB(b, pid, "RssAnon:") }

func procStatusMiB(b *testing.B, pid int, field string) float64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// restAfter is how long after the last command the benchmark measures
// the control plane's RSS again, at rest: two of its memory release
// intervals and a little.
const restAfter = 12 * time.Second

// saveHeap saves the first member's heap profile, queried with query
// ("debug=1": the text form, whose end is runtime.MemStats at that moment;
// "gc=1": the profile after a collection), as DIR/file when
// SANBOOT_BENCH_PROFILES=DIR is set.
func (s *system) saveHeap(b *testing.B, file, query string) {
	b.Helper()
	dir := os.Getenv("SANBOOT_BENCH_PROFILES")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	resp, err := http.Get("http://" + s.members[0].metrics + "/debug/pprof/heap?" + query)
	if err != nil {
		b.Fatalf("heap profile: %v", err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("heap profile: %s %v", resp.Status, err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
		b.Fatal(err)
	}
}
