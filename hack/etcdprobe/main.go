// Command etcdprobe reads or writes one etcd key as the user of a client
// certificate, so that the end-to-end tests can ask etcd itself what a
// certificate may do (etcd takes the certificate's CN as its user). It is
// a test tool, not shipped: etcdctl cannot be installed with go install
// (its go.mod has replace directives) and Debian's is older than the
// embedded etcd.
//
//	etcdprobe --endpoints URL --cert F --key F --cacert F get KEY     (the values of KEY and below)
//	etcdprobe --endpoints URL --cert F --key F --cacert F put KEY VALUE
//	etcdprobe --endpoints URL --cert F --key F --cacert F history PREFIX [FROM-REVISION]
//
// history prints every change etcd kept of the keys under PREFIX, from
// FROM-REVISION (default 1) to now, one line each: "REVISION PUT|DELETE
// KEY CREATE-REVISION" (the end-to-end HA test reads which agents a node
// was ever assigned to, and whether an agent's lease key was ever lost).
//
// It prints what it read, or etcd's error on stderr with exit status 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sanboot/sanboot/internal/tlsconfig"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcdprobe:", err)
		os.Exit(1)
	}
}

func run() error {
	var files tlsconfig.Files
	endpoint := flag.String("endpoints", "", "etcd client URL")
	flag.StringVar(&files.CertFile, "cert", "", "client certificate")
	flag.StringVar(&files.KeyFile, "key", "", "its private key")
	flag.StringVar(&files.TrustedCAFile, "cacert", "", "the CA")
	flag.Parse()
	args := flag.Args()
	usage := fmt.Errorf("usage: etcdprobe --endpoints URL --cert F --key F --cacert F get KEY | put KEY VALUE | history PREFIX [FROM-REVISION]")
	switch {
	case *endpoint == "" || len(args) < 2:
		return usage
	case args[0] == "get" && len(args) == 2, args[0] == "put" && len(args) == 3, args[0] == "history" && len(args) <= 3:
	default:
		return usage
	}
	tc, err := files.Client()
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, TLS: tc, Logger: zap.NewNop(), DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch args[0] {
	case "put":
		_, err := cli.Put(ctx, args[1], args[2])
		return err
	case "history":
		from := int64(1)
		if len(args) == 3 {
			if from, err = strconv.ParseInt(args[2], 10, 64); err != nil || from < 1 {
				return fmt.Errorf("FROM-REVISION %q is not a revision (1 or more)", args[2])
			}
		}
		return history(ctx, cli, args[1], from)
	}
	resp, err := cli.Get(ctx, args[1], clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		fmt.Printf("%s %x\n", kv.Key, kv.Value)
	}
	return nil
}

// history prints the changes under prefix from revision from to the
// revision current when it starts. The watch replays them; a progress
// notification (etcd sends one only once the watcher has caught up) at or
// past that revision says that every change was printed.
func history(ctx context.Context, cli *clientv3.Client, prefix string, from int64) error {
	now, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	end := now.Header.Revision
	if from > end {
		return nil
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	go func() {
		for ctx.Err() == nil {
			_ = cli.RequestProgress(ctx)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	for wresp := range wch {
		if err := wresp.Err(); err != nil {
			return err
		}
		for _, ev := range wresp.Events {
			if ev.Kv.ModRevision > end {
				return nil
			}
			fmt.Printf("%d %s %s %d\n", ev.Kv.ModRevision, ev.Type, ev.Kv.Key, ev.Kv.CreateRevision)
			if ev.Kv.ModRevision == end {
				return nil
			}
		}
		if wresp.IsProgressNotify() && wresp.Header.Revision >= end {
			return nil
		}
	}
	return fmt.Errorf("the watch of %s ended before revision %d: %w", prefix, end, ctx.Err())
}
