// Package integration holds tests that run the real parts of sanboot
// together in one process: an embedded etcd member (internal/etcdtest), the
// API server and the scheduler of the control plane, and an agent (its
// registry and reconciler over the real file store in a temporary
// directory, with the fake iSCSI target driver). The package has no code
// of its own.
package integration
