package member_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"

	"github.com/sanboot/sanboot/controlplane/member"
)

// A single member on loopback, as sanboot-controlplane runs it by default
// (here on free ports and in a temporary directory).
func Example() {
	dir, err := os.MkdirTemp("", "sanboot-member-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	cfg := member.DefaultConfig() // --name default, loopback URLs
	cfg.DataDir = dir
	cfg.Client.ListenURLs = []url.URL{{Scheme: "http", Host: freeAddr()}}
	cfg.Peer.ListenURLs = []url.URL{{Scheme: "http", Host: freeAddr()}}
	cfg.Log = slog.New(slog.DiscardHandler)

	ctx := context.Background()
	m, err := member.Start(ctx, cfg) // returns once the member serves
	if err != nil {
		panic(err)
	}
	defer m.Close()

	cli, err := m.Client()
	if err != nil {
		panic(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/hello", "world"); err != nil {
		panic(err)
	}
	resp, err := cli.Get(ctx, "/hello")
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s = %s\n", resp.Kvs[0].Key, resp.Kvs[0].Value)
	// Output: /hello = world
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
