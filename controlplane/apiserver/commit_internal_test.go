package apiserver

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/kv"
)

// A write whose first attempt gets no answer (as when etcd forwarded it to
// a raft leader that died) is made again: whether the first attempt was
// lost or committed, the write succeeds once and etcd holds its value; a
// real conflict stays one.
func TestCommitAgainAfterAnUnansweredAttempt(t *testing.T) {
	m := etcdtest.Start(t)
	direct := m.Client(t)
	for _, tc := range []struct {
		name string
		// runFirst: the first attempt reaches etcd (and commits) before
		// its answer is lost; else it is lost on the way.
		runFirst bool
		existing string // the key's value before the write ("": absent)
		want     error
	}{
		{name: "answer lost, write committed", runFirst: true},
		{name: "write lost", runFirst: false},
		{name: "conflict stays a conflict", runFirst: false, existing: "someone else's", want: kv.ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "/test/commit/" + strings.ReplaceAll(tc.name, " ", "-")
			if tc.existing != "" {
				if _, err := direct.Put(context.Background(), key, tc.existing); err != nil {
					t.Fatal(err)
				}
			}
			var txns atomic.Int32
			hold := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if !strings.HasSuffix(method, "/Txn") || txns.Add(1) > 1 {
					return invoker(ctx, method, req, reply, cc, opts...)
				}
				if tc.runFirst {
					if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
						return err
					}
				}
				<-ctx.Done() // no answer
				return ctx.Err()
			}
			cli, err := clientv3.New(clientv3.Config{Endpoints: m.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
				DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(hold)}})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			s := New(cli, Config{Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			_, err = s.write(ctx, []clientv3.Cmp{kv.Unchanged(key, 0)}, clientv3.OpPut(key, "mine"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("write: %v, want %v", err, tc.want)
			}
			if n := txns.Load(); n < 2 {
				t.Fatalf("%d transactions: the unanswered attempt was not made again", n)
			}
			resp, err := direct.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			want := "mine"
			if tc.existing != "" {
				want = tc.existing
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
				t.Fatalf("etcd holds %v, want %q", resp.Kvs, want)
			}
		})
	}
}
