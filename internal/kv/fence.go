package kv

import (
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrDeposed means a fenced write was refused because its writer no longer
// holds the key it is fenced by (another member leads now): stop writing.
var ErrDeposed = errors.New("deposed: this writer no longer holds its election key; another member leads")

// Fence makes writes conditional on still holding a lock or an election:
// Key is the holder's key (concurrency.Election.Key()) and CreateRevision
// the revision it was created at (Election.Rev()). A deposed holder's key
// is gone, or was created again by a later campaign at another revision,
// so its fenced writes fail however late they arrive.
//
// The zero Fence fences nothing.
type Fence struct {
	Key            string
	CreateRevision int64
}

// Enabled says whether f fences anything.
func (f Fence) Enabled() bool { return f.Key != "" }

// Cmp is the comparison to add to a transaction's If.
func (f Fence) Cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.CreateRevision)
}

// ElseOp is the operation to add to the transaction's Else so that Held
// can tell a lost fence from another failed comparison.
func (f Fence) ElseOp() clientv3.Op { return clientv3.OpGet(f.Key) }

// Held reports, from a failed transaction that had f.ElseOp() as its first
// Else operation, whether the fence still held (another comparison failed).
func (f Fence) Held(resp *clientv3.TxnResponse) bool {
	if len(resp.Responses) == 0 {
		return false
	}
	r := resp.Responses[0].GetResponseRange()
	return r != nil && len(r.Kvs) == 1 && r.Kvs[0].CreateRevision == f.CreateRevision
}
