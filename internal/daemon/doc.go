// Package daemon is what sanboot's two daemons (sanboot-controlplane and
// sanboot-agent) share to run as services:
//
//   - a YAML configuration file read into a flag.FlagSet (--config FILE):
//     its keys are the flags' names, flags given on the command line
//     override it, and a wrong key or value is an error naming file:line;
//   - the logger (--log-format text or json, to stderr for journald);
//   - the systemd notify protocol (READY=1, STOPPING=1) through
//     github.com/coreos/go-systemd/v22/daemon;
//   - the operator's HTTP endpoint (--metrics-listen): /healthz, /readyz
//     and Prometheus /metrics from a per-daemon registry.
package daemon
