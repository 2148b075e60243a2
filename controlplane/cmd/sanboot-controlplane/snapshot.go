package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/controlplane/backup"
	"github.com/sanboot/sanboot/internal/daemon"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

// subcommands are the maintenance commands, run instead of the member
// when they are the first argument. They get the member's flag set (so
// that --config and the etcd flags mean what they mean to the member) and
// return the exit code.
var subcommands = map[string]func(fs *flag.FlagSet, cfg *controlplane.Config, args []string) int{
	"snapshot": snapshotCmd,
	"restore":  restoreCmd,
}

const snapshotUsage = `usage:
  sanboot-controlplane snapshot save [--endpoints URLS] [--cert F --key F --cacert F] FILE
      save a snapshot of the running member's etcd (through its maintenance
      API) to FILE and print its revision and checksums
  sanboot-controlplane snapshot status FILE
      print a snapshot's revision, keys and checksums
  sanboot-controlplane restore [--config FILE] [--data-dir DIR] [--name ...] SNAPSHOT
      make DIR (the member's --data-dir, which must hold no member: stop the
      control plane and move DIR/member away first) hold the snapshot's data;
      then start the control plane on it. See docs/operations.md.
Flags may come before or after FILE and SNAPSHOT.
`

func snapshotCmd(_ *flag.FlagSet, _ *controlplane.Config, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, snapshotUsage)
		return 2
	}
	switch args[0] {
	case "save":
		fs := flag.NewFlagSet("sanboot-controlplane snapshot save", flag.ContinueOnError)
		endpoints := fs.String("endpoints", "http://127.0.0.1:2379", "client URLs of the etcd member, comma separated (https:// with --cert)")
		var tlsFiles tlsconfig.Files
		fs.StringVar(&tlsFiles.CertFile, "cert", "", "with TLS: a certificate with etcd's root role (the member's own, --cert-file)")
		fs.StringVar(&tlsFiles.KeyFile, "key", "", "private key of --cert")
		fs.StringVar(&tlsFiles.TrustedCAFile, "cacert", "", "CA of the member's certificate")
		files, err := daemon.ParseArgs(fs, args[1:])
		if err != nil {
			return 2
		}
		if len(files) != 1 {
			fmt.Fprint(os.Stderr, snapshotUsage)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		var tlsConfig *tls.Config
		if tlsFiles.Enabled() {
			var err error
			if tlsConfig, err = tlsFiles.Client(); err != nil {
				fmt.Fprintln(os.Stderr, "sanboot-controlplane snapshot save:", err)
				return 2
			}
		}
		info, err := backup.Save(ctx, strings.Split(*endpoints, ","), tlsConfig, files[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "sanboot-controlplane snapshot save:", err)
			return 1
		}
		printInfo(info)
		return 0
	case "status":
		if len(args) != 2 {
			fmt.Fprint(os.Stderr, snapshotUsage)
			return 2
		}
		info, err := backup.Status(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "sanboot-controlplane snapshot status:", err)
			return 1
		}
		printInfo(info)
		return 0
	default:
		fmt.Fprint(os.Stderr, snapshotUsage)
		return 2
	}
}

func printInfo(i backup.Info) {
	fmt.Printf("snapshot %s\nrevision %d\nkeys     %d\nsize     %d\nsha256   %s\nhash     %08x (etcd)\nversion  %s\n",
		i.Path, i.Revision, i.Keys, i.Size, i.SHA256, i.Hash, i.Version)
}

func restoreCmd(fs *flag.FlagSet, cfg *controlplane.Config, args []string) int {
	files, err := daemon.ParseArgs(fs, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sanboot-controlplane restore:", err)
		return 2
	}
	if len(files) != 1 {
		fmt.Fprint(os.Stderr, snapshotUsage)
		return 2
	}
	m := cfg.Member
	peers := m.Peer.AdvertiseURLs
	if len(peers) == 0 {
		peers = m.Peer.ListenURLs
	}
	var peerURLs []string
	for _, u := range peers {
		peerURLs = append(peerURLs, u.String())
	}
	initial := m.Cluster.Initial
	if initial == "" && len(peerURLs) > 0 {
		initial = m.Name + "=" + peerURLs[0]
	}
	rc := backup.RestoreConfig{Snapshot: files[0], DataDir: m.DataDir, Name: m.Name, PeerURLs: peerURLs, InitialCluster: initial}
	if err := backup.Restore(rc); err != nil {
		fmt.Fprintln(os.Stderr, "sanboot-controlplane restore:", err)
		return 1
	}
	fmt.Printf("restored %s into %s as member %q (%s); start the control plane on it\n", rc.Snapshot, rc.DataDir, rc.Name, initial)
	return 0
}
