// Command sanboot-controlplane runs one control-plane member: an embedded
// etcd member, the gRPC API and the leader-elected controllers.
//
// The etcd flags are etcd's own (--name, --data-dir, --listen-client-urls,
// ...). Until TLS is configured every listener must be on loopback.
//
//	sanboot-controlplane --data-dir /var/lib/sanboot
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/controlplane/apiserver"
)

func main() {
	cfg := controlplane.DefaultConfig()
	fs := flag.NewFlagSet("sanboot-controlplane", flag.ExitOnError)
	cfg.Member.AddFlags(fs)
	fs.StringVar(&cfg.APIListen, "api-listen", cfg.APIListen, "host:port of the gRPC API (loopback only in insecure mode)")
	fs.StringVar(&cfg.UploadDir, "upload-dir", "", "where image uploads are staged until every agent has fetched them (default DATA-DIR/uploads)")
	fs.DurationVar(&cfg.UploadTTL, "upload-ttl", apiserver.DefaultUploadTTL, "how long a staged upload that no image refers to is kept")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Parse(os.Args[1:])

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level: %v\n", err)
		os.Exit(2)
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controlplane.Run(ctx, cfg); err != nil {
		cfg.Log.Error("control plane failed", "err", err)
		os.Exit(1)
	}
}
