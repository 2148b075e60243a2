// Package bench measures sanboot end to end: real processes, real etcd.
//
// BenchmarkProvision starts sanboot-controlplane and one sanboot-agent
// running the in-memory fake driver (so that iSCSI does not dominate), then
// provisions nodes through the gRPC API from 64 goroutines and waits,
// through one WatchNodes stream, until every node is Ready. It reports the
// wall time, the per-node latency from PutNode to Ready (p50, p99), and the
// number of etcd write transactions the run needed (the store revision
// advances once per committed write transaction).
//
// In the same run it commits that many compare-and-put transactions with the
// same concurrency on a fresh embedded etcd on the same machine, and
// reports the ratio of the two times: how much sanboot costs on top of the
// transactions it cannot avoid.
//
//	go test -run '^$' -bench . -benchtime 1x ./bench/
//
// Figures and the machine they came from go in docs/benchmarks.md.
package bench
