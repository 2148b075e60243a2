package main

import (
	"crypto/tls"
	"log/slog"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/agent/export"
	"github.com/sanboot/sanboot/agent/fetch"
	"github.com/sanboot/sanboot/agent/store"
)

// newFetcher is how the file store gets the bytes of upload sources (from
// the control-plane member that staged them, found in etcd) and url
// sources (HTTP GET): see package fetch.
func newFetcher(cli *clientv3.Client, tlsConfig *tls.Config, log *slog.Logger) *fetch.Fetcher {
	return fetch.New(fetch.Config{Client: cli, TLS: tlsConfig, Log: log})
}

// newExporter answers the export requests for this agent with the images
// of st; a store that keeps no bytes (the fake) answers each with an error
// that says so.
func newExporter(agent string, cli *clientv3.Client, tlsConfig *tls.Config, st store.Store, log *slog.Logger) (*export.Exporter, error) {
	cfg := export.Config{Agent: agent, Client: cli, TLS: tlsConfig, Log: log}
	if images, ok := st.(export.Images); ok {
		cfg.Images = images
	}
	return export.New(cfg)
}
