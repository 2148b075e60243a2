// Package bench measures sanboot end to end: real processes, real etcd.
// Every benchmark starts its own sanboot-controlplane and one
// sanboot-agent (built from this tree) and reports figures; none asserts a
// time. Compare figures of one run, as ratios.
//
// BenchmarkProvision runs the agent with the in-memory fake driver (so that
// iSCSI does not dominate), provisions 1,000 nodes through the gRPC API from
// 64 goroutines and waits, through one WatchNodes stream, until every node
// is Ready. It reports the wall time, the per-node latency from PutNode to
// Ready (p50, p99), and the number of etcd write transactions the run
// needed (the store revision advances once per committed write
// transaction). In the same run it commits that many compare-and-put
// transactions with the same concurrency on a fresh embedded etcd on the
// same machine, and reports the ratio of the two times: how much sanboot
// costs on top of the transactions it cannot avoid.
//
// BenchmarkApply goes the user's way: `sanbootctl apply -f FILE --wait`
// (the sanbootctl binary) of an image and 1,000, then 10,000, new nodes,
// against a control plane and an agent with the fake driver. It reports
// the time to every node Ready and the ratio to one compare-and-put
// transaction per node on a raw embedded etcd (what creating each node
// with its own comparison costs on etcd alone; sanboot batches them, so
// the ratio can be below 1), the etcd write transactions it took and the
// CPU time the control plane, the agent and sanbootctl spent on it (a
// count a loaded machine disturbs less than the wall time), then times
// the same apply again
// (every node unchanged; it fails if etcd's revision moves) and `diff -f`,
// and reports the control plane's and the agent's resident memory.
//
// BenchmarkApplyHA does the same apply of 1,000 nodes against a control
// plane of one member and one of three (member processes on loopback,
// etcd's default election settings), three times each, alternately, in
// one run, and reports the medians and their ratio: what replication
// costs the user.
//
// BenchmarkFailover runs three members, the agent and 1,000 placed nodes,
// and five times (SANBOOT_BENCH_FAILOVERS) kills the member that runs the
// controllers with SIGKILL, creates a node through the API at once and
// measures the time from the kill to that node's placement by the next
// leader (median and maximum), with its parts: when the next leader took
// over, and how long the node's creation took.
//
// SANBOOT_BENCH_LOGS=DIR copies every process's log there at the end.
// BenchmarkApply measures the control plane's RSS right after the last
// command and again at rest, 12 s later (the member gives memory back a
// few seconds after a burst). SANBOOT_BENCH_PROFILES=DIR saves there the
// member's MemStats at both moments and its heap profile at rest (go tool
// pprof -sample_index=inuse_space or alloc_space FILE; the members run
// with --enable-pprof).
//
// BenchmarkProvisionTgt runs a storage host for real: the agent with
// --driver=tgt and its own tgtd on a loopback portal, its store on XFS with
// reflink=1 on a loop device (internal/looptest). It uploads a 64 MiB image
// (UploadImage, then PutImage with the upload as its source), provisions
// 200 nodes from it the same way, and reports the time until all are
// Ready, the time per node and the per-node p50 and p99. In the same run it
// makes 200 targets on a fresh tgtd with bare tgtadm calls and reports the
// ratio: what sanboot costs on top of tgtadm.
//
// BenchmarkISCSIRead provisions one node from a 512 MiB image of random
// data on such a host and reads its disk sequentially with qemu-img bench
// (1 MiB requests, 8 in flight) through iSCSI and straight from the disk
// file, interleaved, three of each, with the page cache warm for both
// ("warm") and dropped before each read ("cold"). It reports the median
// rates and their ratio, and the rate of one loopback TCP connection (the
// ceiling of any one-connection transport on the machine).
//
// The tgt benchmarks need root, tgtd and tgtadm (Debian: tgt), mkfs.xfs
// (xfsprogs), a loop device, and for the reads qemu-img with its iSCSI
// driver (qemu-utils, qemu-block-extra); without them they fail and say
// what to install. hack/install-deps.sh installs everything.
//
//	go test -run '^$' -bench . -benchtime 1x ./bench/
//
// (or `make bench`, which also runs the clone benchmarks of
// agent/store/filestore). Figures and the machine they came from go in
// docs/benchmarks.md.
package bench
