package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
	"github.com/sanboot/sanboot/internal/lease"
)

// MemberTTL is the lease of a member registration, in seconds.
const MemberTTL = 10

// RegisterMember keeps m at api.MemberKey(m.Name) under a lease of ttl
// seconds (package lease, as the agents' registrations), so that a client
// that knows one member finds them all. When the lease is lost (etcd was
// unreachable for longer than ttl) it registers again. When ctx ends it
// revokes the lease and returns nil.
func RegisterMember(ctx context.Context, cli *clientv3.Client, m *sanbootv1.Member, ttl int64, log *slog.Logger) error {
	key := api.MemberKey(m.GetName())
	k := lease.New(cli, lease.Config{
		What: "member " + m.GetName(), TTL: time.Duration(ttl) * time.Second, Log: log,
		Register: func(ctx context.Context, id, _ clientv3.LeaseID) error {
			put, err := kv.PutOp(key, m, clientv3.WithLease(id))
			if err != nil {
				return err
			}
			if _, err := cli.Do(ctx, put); err != nil {
				return fmt.Errorf("write %s: %w", key, err)
			}
			log.Info("member registered", "key", key, "api", m.GetApiEndpoints(), "client-urls", m.GetClientUrls())
			return nil
		},
	})
	_ = k.Run(ctx)
	return nil
}
