// Command sanboot-controlplane runs one control-plane member: an embedded
// etcd member, the gRPC API, the boot server (iPXE scripts over HTTP) and
// the leader-elected controllers.
//
// The etcd flags are etcd's own (--name, --data-dir, --listen-client-urls,
// ...), TLS included (--cert-file, --key-file, --trusted-ca-file serve
// etcd's clients and the API; --peer-cert-file ... the peers). Without
// TLS every listener must be on loopback.
//
//	sanboot-controlplane --data-dir /var/lib/sanboot
//	sanboot-controlplane --config /etc/sanboot/controlplane.yaml
//	sanboot-controlplane snapshot save --endpoints http://127.0.0.1:2379 FILE
//	sanboot-controlplane restore --data-dir DIR FILE
//
// Every flag can also be set in the YAML file given to --config (keys are
// the flags' names; flags override the file). Health, readiness and
// Prometheus metrics are served over HTTP on --metrics-listen; under
// systemd (Type=notify) READY=1 is sent once the API answers.
//
// Unless the environment sets GOGC, the member runs with GOGC=50 (see
// gcPercent); it gives the memory a burst took back to the system once
// the burst has passed (--memory-release-interval).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/controlplane/boot"
	"github.com/sanboot/sanboot/controlplane/staging"
	"github.com/sanboot/sanboot/internal/daemon"
)

// gcPercent is the member's GOGC unless the environment sets one. A member
// holds every record of the fleet in memory, decoded (its informer), and
// the API's views of them; with Go's default (100) the heap grows to twice
// that before a collection, with 50 to one and a half times, for a little
// more CPU in a process whose work waits on etcd's disk
// (docs/benchmarks.md: ~235 MiB against ~165 MiB with 10,000 nodes).
const gcPercent = 50

// memoryReleaseInterval is the default of --memory-release-interval: after
// a burst (10,000 nodes created) the member gives back what the burst
// took within a few seconds, not when Go's runtime next collects.
const memoryReleaseInterval = 5 * time.Second

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	cfg := controlplane.DefaultConfig()
	fs := flag.NewFlagSet("sanboot-controlplane", flag.ExitOnError)
	cfg.Member.AddFlags(fs)
	fs.StringVar(&cfg.APIListen, "api-listen", cfg.APIListen, "host:port of the gRPC API (mutual TLS with --cert-file; without it loopback only)")
	fs.Func("advertise-api", "host:port agents and other members reach the API at, comma-separated (default: --api-listen)", func(v string) error {
		cfg.APIAdvertise = nil
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(e); err != nil {
				return fmt.Errorf("%q is not host:port", e)
			}
			cfg.APIAdvertise = append(cfg.APIAdvertise, e)
		}
		return nil
	})
	fs.StringVar(&cfg.UploadDir, "upload-dir", "", "where image uploads are staged until every agent has fetched them (default DATA-DIR/uploads)")
	fs.DurationVar(&cfg.UploadTTL, "upload-ttl", staging.DefaultUploadTTL, "how long a staged upload that no image refers to is kept")
	fs.StringVar(&cfg.BootListen, "boot-listen", cfg.BootListen, "host:port of the boot server, which serves nodes their iPXE scripts over HTTP (beyond loopback: with --boot-tokens or --boot-insecure-chap; empty: none)")
	fs.StringVar(&cfg.Boot.URL, "boot-url", "", "base URL nodes reach the boot server at, e.g. http://10.0.0.1:8080 (default: scripts refer to it by path)")
	fs.BoolVar(&cfg.BootInsecureCHAP, "boot-insecure-chap", false, "with --boot-listen beyond loopback and no --boot-tokens: serve CHAP credentials to anyone who asks (warns at start; not recommended)")
	fs.BoolVar(&cfg.Boot.Tokens, "boot-tokens", false, "serve a node's script only to a URL with its one-time boot token (sanbootctl boot-script NODE issues one); see docs/boot.md")
	fs.DurationVar(&cfg.Boot.TokenTTL, "boot-token-ttl", boot.DefaultTokenTTL, "how long an unused boot token stays valid")
	var common daemon.Common
	common.AddFlags(fs, daemon.DefaultControlPlaneMetrics)
	common.AddPprofFlag(fs)
	common.AddMemoryReleaseFlag(fs, memoryReleaseInterval)
	if len(os.Args) > 1 && subcommands[os.Args[1]] != nil {
		os.Exit(subcommands[os.Args[1]](fs, &cfg, os.Args[2:]))
	}
	if err := daemon.Parse(fs, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sanboot-controlplane:", err)
		os.Exit(2)
	}
	log, err := common.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sanboot-controlplane:", err)
		os.Exit(2)
	}
	cfg.Log = log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, common); err != nil {
		cfg.Log.Error("control plane failed", "err", err)
		os.Exit(1)
	}
}
