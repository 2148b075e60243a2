// Command etcdprobe reads or writes one etcd key as the user of a client
// certificate, so that the end-to-end tests can ask etcd itself what a
// certificate may do (etcd takes the certificate's CN as its user). It is
// a test tool, not shipped: etcdctl cannot be installed with go install
// (its go.mod has replace directives) and Debian's is older than the
// embedded etcd.
//
//	etcdprobe --endpoints URL --cert F --key F --cacert F get KEY     (the values of KEY and below)
//	etcdprobe --endpoints URL --cert F --key F --cacert F put KEY VALUE
//
// It prints what it read, or etcd's error on stderr with exit status 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
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
	if *endpoint == "" || len(args) < 2 || (args[0] == "put") != (len(args) == 3) || (args[0] != "get" && args[0] != "put") {
		return fmt.Errorf("usage: etcdprobe --endpoints URL --cert F --key F --cacert F get KEY | put KEY VALUE")
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
	if args[0] == "put" {
		_, err := cli.Put(ctx, args[1], args[2])
		return err
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
