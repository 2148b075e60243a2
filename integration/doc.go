// Package integration holds tests that run the control plane's and the
// agent's real parts together in one process, driven through sanbootctl's
// command tree: a real embedded etcd, the API server on a loopback port,
// the scheduler, and agents (registry, reconciler, file store on a temp
// directory, fetcher, exporter) with the fake target driver. TestFoundation
// and TestDeclarative run the whole member (controlplane.Run) and agents
// with the fake store, as `sanboot-agent --driver=fake` does; they replaced
// hack/e2e.sh and hack/e2e-apply.sh. It has no code of its own.
//
//	go test ./integration/
package integration
