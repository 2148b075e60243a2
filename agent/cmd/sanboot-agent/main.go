// Command sanboot-agent runs on a storage host: it registers itself in etcd
// under a lease, watches its own assignments and the image specs, and makes
// its store and iSCSI target match them. It never listens for commands:
// it opens every connection itself. See agent/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sanboot/sanboot/agent"
	"github.com/sanboot/sanboot/agent/target/lio"
	"github.com/sanboot/sanboot/agent/target/tgt"
	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/internal/bytesize"
	"github.com/sanboot/sanboot/internal/daemon"
	"github.com/sanboot/sanboot/internal/pki"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if len(os.Args) > 1 && os.Args[1] == "lio" { // sanboot-agent lio dump: see lio.go
		run = func(ctx context.Context, args []string, stderr io.Writer) error {
			return runLIO(ctx, args[1:], os.Stdout, stderr)
		}
	}
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "sanboot-agent:", err)
		os.Exit(2)
	}
}

// config is what the flags set: the agent's Config and the settings of
// the process (--config, logging, --metrics-listen).
type config struct {
	agent.Config
	common daemon.Common // --config, --log-format, --log-level, --metrics-listen
}

// listFlag is a repeatable flag.
type listFlag struct {
	vals []string
	set  bool
}

func (l *listFlag) String() string   { return strings.Join(l.vals, ",") }
func (l *listFlag) Repeatable() bool { return true } // a YAML list in --config
func (l *listFlag) Set(s string) error {
	if !l.set {
		l.vals, l.set = nil, true // the first use replaces the default
	}
	l.vals = append(l.vals, s)
	return nil
}

func parseFlags(args []string, out io.Writer) (config, error) {
	fs := flag.NewFlagSet("sanboot-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		c         config
		endpoints string
		capacity  string
		portals   = listFlag{vals: []string{"127.0.0.1:3260"}}
		advertise listFlag
		syncEPs   bool
	)
	fs.StringVar(&c.Name, "name", "", "this agent's name, a DNS label unique among agents (required; with --cert, default and must be its CN)")
	fs.StringVar(&endpoints, "etcd-endpoints", "http://127.0.0.1:2379", "etcd client URLs of one or more control-plane members, comma separated (the client fails over between them and finds the cluster's other members itself): https:// with --cert, else http:// on loopback")
	fs.StringVar(&c.TLS.CertFile, "cert", "", "the agent's certificate (sanbootctl pki issue agent NAME), presented to etcd and to the API")
	fs.StringVar(&c.TLS.KeyFile, "key", "", "private key of --cert")
	fs.StringVar(&c.TLS.TrustedCAFile, "cacert", "", "CA that etcd's and the API's certificates must be signed by")
	fs.StringVar(&c.Driver, "driver", "", "iSCSI target driver: "+agent.DriverNames()+" (an in-memory stand-in for tests); default lio when --configfs-root exists, else required")
	fs.StringVar(&c.ConfigfsRoot, "configfs-root", lio.DefaultRoot, "with --driver=lio: LIO's configfs directory")
	fs.StringVar(&c.Store, "store", agent.StoreFile, "where images and node disks live: file (files in --store-dir) or rbd (RBD images in --rbd-pool of a Ceph cluster, served with --driver=tgt; agents sharing a pool share its disks)")
	fs.StringVar(&c.StoreDir, "store-dir", "/var/lib/sanboot", "with --store=file: where images and node disks live; XFS with reflink=1 or btrfs clone in constant time (the fake store keeps nothing there)")
	addCephFlags(fs, &c.Ceph)
	fs.StringVar(&c.Tgtd, "tgtd", agent.TgtdManaged, "with --driver=tgt: managed (run a private tgtd on --portal, stopped with the agent) or system (use a tgtd that runs as its own service)")
	fs.IntVar(&c.TgtdControl, "tgtd-control", -1, "tgtd control socket number (tgtadm -C); default 0 with --tgtd=system, 3260 with --tgtd=managed")
	fs.Var(&portals, "portal", "ADDR:PORT targets listen on (repeatable)")
	fs.Var(&advertise, "advertise-portal", "ADDR:PORT nodes are told to use, when it differs from --portal (NAT, VM; repeatable)")
	fs.BoolVar(&syncEPs, "etcd-sync-endpoints", true, "replace --etcd-endpoints every minute with the client URLs the members advertise (finds members added later); "+
		"=false when this agent reaches etcd through addresses the members do not advertise (NAT, port forwarding, a VM's user network)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 10*time.Second, "TTL of the registration lease: how long after a crash the agent shows Unavailable")
	fs.DurationVar(&c.ResyncInterval, "resync-interval", time.Minute, "interval of full resyncs (desired in etcd vs actual store and targets)")
	fs.IntVar(&c.Workers, "workers", 8, "nodes and images worked on at once")
	fs.StringVar(&capacity, "fake-capacity", "1TiB", "size the fake store pretends to have (--driver=fake)")
	c.common.AddFlags(fs, daemon.DefaultAgentMetrics)
	if err := daemon.Parse(fs, args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q: every setting is a flag; see --help", fs.Args())
	}
	c.Portals, c.AdvertisePortals = portals.vals, advertise.vals
	c.KeepEndpoints = !syncEPs

	var errs []error
	if err := c.TLS.Check(tlsconfig.ClientNames); err != nil {
		errs = append(errs, err)
	} else if c.TLS.Enabled() {
		errs = append(errs, checkAgentCert(c.TLS.CertFile, &c.Name))
	}
	if err := api.ValidateName("--name", c.Name); err != nil {
		errs = append(errs, err)
	}
	if c.Driver == "" {
		c.Driver = agent.DefaultDriver(c.ConfigfsRoot)
	}
	driverErr := agent.CheckDriver(c.Driver)
	if c.Driver == "" {
		driverErr = fmt.Errorf("--driver is required: no LIO at %s (modprobe iscsi_target_mod makes it), so no default: available drivers: %s", c.ConfigfsRoot, agent.DriverNames())
	}
	errs = append(errs, driverErr)
	if !filepath.IsAbs(c.ConfigfsRoot) {
		errs = append(errs, fmt.Errorf("--configfs-root=%q: use an absolute path such as %s", c.ConfigfsRoot, lio.DefaultRoot))
	}
	switch c.Tgtd {
	case agent.TgtdManaged:
		if c.TgtdControl == -1 {
			c.TgtdControl = 3260
		}
		if c.TgtdControl < 1 || c.TgtdControl > tgt.MaxControlPort {
			errs = append(errs, fmt.Errorf("--tgtd-control=%d: a managed tgtd takes 1 to %d (0 is the system tgtd's)", c.TgtdControl, tgt.MaxControlPort))
		}
	case agent.TgtdSystem:
		if c.TgtdControl == -1 {
			c.TgtdControl = 0
		}
		if c.TgtdControl < 0 || c.TgtdControl > tgt.MaxControlPort {
			errs = append(errs, fmt.Errorf("--tgtd-control=%d: use 0 to %d", c.TgtdControl, tgt.MaxControlPort))
		}
	default:
		errs = append(errs, fmt.Errorf("--tgtd=%q: use managed or system", c.Tgtd))
	}
	for e := range strings.SplitSeq(endpoints, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		u, err := url.Parse(e)
		switch {
		case err != nil || u.Host == "" || u.Path != "" && u.Path != "/":
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q is not a URL such as http://127.0.0.1:2379", e))
		case u.Scheme == "https" && !c.TLS.Enabled():
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q: https needs --cert, --key and --cacert", e))
		case u.Scheme == "http" && c.TLS.Enabled():
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q: with --cert, use https://", e))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q: use https:// (with --cert) or http://", e))
		default:
			c.Endpoints = append(c.Endpoints, e)
		}
	}
	if len(c.Endpoints) == 0 && errors.Join(errs...) == nil {
		errs = append(errs, errors.New("--etcd-endpoints is empty: give at least one URL such as http://127.0.0.1:2379"))
	}
	if driverErr == nil {
		errs = append(errs, agent.CheckStore(c.Store, c.Driver))
	}
	if c.Store == agent.StoreRBD {
		errs = append(errs, c.Ceph.Check())
	}
	if !filepath.IsAbs(c.StoreDir) || filepath.Clean(c.StoreDir) != c.StoreDir {
		errs = append(errs, fmt.Errorf("--store-dir=%q: use an absolute, clean path such as /var/lib/sanboot", c.StoreDir))
	} else if fi, err := os.Stat(c.StoreDir); err == nil && !fi.IsDir() {
		errs = append(errs, fmt.Errorf("--store-dir=%q is not a directory", c.StoreDir))
	}
	errs = append(errs, checkPortals("--portal", c.Portals, true), checkPortals("--advertise-portal", c.AdvertisePortals, false))
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL > time.Hour {
		errs = append(errs, fmt.Errorf("--lease-ttl=%v: use 2s to 1h (etcd's minimum is about 2s)", c.LeaseTTL))
	}
	if c.ResyncInterval < time.Second {
		errs = append(errs, fmt.Errorf("--resync-interval=%v: use at least 1s", c.ResyncInterval))
	}
	if c.Workers < 1 || c.Workers > 1024 {
		errs = append(errs, fmt.Errorf("--workers=%d: use 1 to 1024", c.Workers))
	}
	size, err := bytesize.Parse(capacity)
	if err != nil {
		errs = append(errs, fmt.Errorf("--fake-capacity: %w", err))
	}
	c.FakeCapacity = size
	c.Store = agent.StoreFor(c.Driver, c.Store)
	if _, err := c.common.Logger(io.Discard); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// checkAgentCert reads the identity of the agent's certificate: it must
// be an agent's, and its CN is the agent's name (name defaults to it).
func checkAgentCert(path string, name *string) error {
	cert, err := pki.ReadCert(path)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}
	if id.Role != pki.RoleAgent {
		return fmt.Errorf("--cert %s is a %s's certificate (%s): an agent needs one from sanbootctl pki issue agent NAME", path, id.Role, id.Name)
	}
	if *name == "" {
		*name = id.Name
	} else if *name != id.Name {
		return fmt.Errorf("--name %q differs from the certificate's name %q (--cert %s): drop --name or issue a certificate for %q", *name, id.Name, path, *name)
	}
	return nil
}

func checkPortals(flagName string, portals []string, required bool) error {
	if required && len(portals) == 0 {
		return fmt.Errorf("%s: give at least one ADDR:PORT", flagName)
	}
	var errs []error
	seen := map[string]bool{}
	for _, p := range portals {
		if err := api.ValidatePortal(flagName, p); err != nil {
			errs = append(errs, err)
		} else if seen[p] {
			errs = append(errs, fmt.Errorf("%s: %s is given twice", flagName, p))
		}
		seen[p] = true
	}
	return errors.Join(errs...)
}

// run is the whole program; it returns when ctx ends (after revoking the
// lease) or when the flags are wrong.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if c.Log, err = c.common.Logger(stderr); err != nil {
		return err
	}
	c.MetricsListen = c.common.MetricsListen
	return agent.Run(ctx, c.Config)
}
