package bench

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/internal/etcdtest"
)

// nodesPerRun is how many nodes BenchmarkProvision creates.
const nodesPerRun = 1000

// BenchmarkProvision: 1,000 nodes through a real control plane and an agent
// with the in-memory fake driver, against the etcd transactions they need.
func BenchmarkProvision(b *testing.B) {
	dir := b.TempDir()
	sys := startSystem(b, "--driver", "fake", "--store-dir", filepath.Join(dir, "store"), "--workers", "16")
	for i := range b.N {
		project := "bench-" + strconv.Itoa(i)
		sys.createImage(b, project)
		rev0 := sys.revision(b)
		took, lat := sys.provision(b, project, "golden", "n-", nodesPerRun)
		txns := sys.revision(b) - rev0

		raw := rawEtcd(b, int(txns), concurrency)
		slices.Sort(lat)
		b.ReportMetric(float64(took.Milliseconds()), "ms/1000nodes")
		b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
		b.ReportMetric(float64(txns), "etcd-txns")
		b.ReportMetric(float64(raw.Milliseconds()), "raw-etcd-ms")
		b.ReportMetric(float64(took)/float64(raw), "ratio-to-raw")
		b.Logf("%d nodes Ready in %v (p50 %v, p99 %v); %d etcd write txns; the same txns on raw etcd: %v; ratio %.2f",
			nodesPerRun, took.Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond),
			lat[len(lat)*99/100].Round(time.Millisecond), txns, raw.Round(time.Millisecond), float64(took)/float64(raw))
	}
}

// rawEtcd commits txns compare-and-put transactions from `workers`
// goroutines on a fresh embedded etcd and returns how long they took.
func rawEtcd(b *testing.B, txns, workers int) time.Duration {
	b.Helper()
	m := etcdtest.Start(b)
	c := m.Client(b)
	ctx := context.Background()
	val := string(make([]byte, 200)) // about the size of a node record
	var next atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(txns) {
					return
				}
				key := "/raw/" + strconv.FormatInt(i, 10)
				if _, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
					Then(clientv3.OpPut(key, val)).Commit(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(begin)
	m.Stop()
	return took
}
