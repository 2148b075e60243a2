package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
)

// MemberTTL is the lease of a member registration, in seconds.
const MemberTTL = 10

// RegisterMember keeps m at api.MemberKey(m.Name) under a lease of ttl
// seconds, so that a client that knows one member finds them all. When the
// lease is lost (etcd was unreachable for longer than ttl) it registers
// again. When ctx ends it revokes the lease and returns nil.
func RegisterMember(ctx context.Context, cli *clientv3.Client, m *sanbootv1.Member, ttl int64, log *slog.Logger) error {
	log = log.With("member", m.GetName())
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := registerOnce(ctx, cli, m, ttl, log)
		if ctx.Err() != nil {
			break
		}
		log.Warn("member registration lost; registering again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

func registerOnce(ctx context.Context, cli *clientv3.Client, m *sanbootv1.Member, ttl int64, log *slog.Logger) error {
	lease, err := cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("grant a lease: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		cli.Revoke(rctx, lease.ID)
	}()
	put, err := kv.PutOp(api.MemberKey(m.GetName()), m, clientv3.WithLease(lease.ID))
	if err != nil {
		return err
	}
	if _, err := cli.Do(ctx, put); err != nil {
		return fmt.Errorf("write %s: %w", api.MemberKey(m.GetName()), err)
	}
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep the lease alive: %w", err)
	}
	log.Info("member registered", "key", api.MemberKey(m.GetName()), "api", m.GetApiEndpoints(), "client-urls", m.GetClientUrls())
	for range ch {
	}
	return errors.New("the lease expired or etcd stopped answering")
}
