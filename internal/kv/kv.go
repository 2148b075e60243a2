// Package kv reads and writes sanboot's protobuf records in etcd with
// optimistic concurrency, and mirrors a key prefix with list-then-watch that
// survives compaction and reconnects (see Reflect).
package kv

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// ErrNotFound means the key does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict means the key changed since it was read: read it again and
// retry the update.
var ErrConflict = errors.New("conflict: the record changed since it was read; read it again and retry")

// Get reads the record at key into msg and returns its mod_revision.
func Get(ctx context.Context, c clientv3.KV, key string, msg proto.Message) (int64, error) {
	resp, err := c.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err := proto.Unmarshal(resp.Kvs[0].Value, msg); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// PutOp returns the operation that writes msg at key.
func PutOp(key string, msg proto.Message, opts ...clientv3.OpOption) (clientv3.Op, error) {
	b, err := proto.Marshal(msg)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("encode %s: %w", key, err)
	}
	return clientv3.OpPut(key, string(b), opts...), nil
}

// Unchanged is the comparison "key's mod_revision is still modRev"; with
// modRev 0 it is "key does not exist".
func Unchanged(key string, modRev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(key), "=", modRev)
}

// CAS writes msg at key if the key's mod_revision is still modRev (0: if the
// key does not exist). It returns the new revision, or ErrConflict.
func CAS(ctx context.Context, c clientv3.KV, key string, modRev int64, msg proto.Message, opts ...clientv3.OpOption) (int64, error) {
	put, err := PutOp(key, msg, opts...)
	if err != nil {
		return 0, err
	}
	resp, err := c.Txn(ctx).If(Unchanged(key, modRev)).Then(put).Commit()
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("write %s: %w", key, ErrConflict)
	}
	return resp.Header.Revision, nil
}
