// Package integration holds tests that run the control plane's and the
// agent's real parts together in one process: a real embedded etcd, the
// API server on a loopback port, the scheduler, and an agent (registry, reconciler, file
// store on a temp directory, fetcher, exporter) with the fake target
// driver, driven through sanbootctl's command tree. It has no code of its
// own.
//
//	go test ./integration/
package integration
