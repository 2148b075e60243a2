package apiserver

import (
	"crypto/rand"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

// secretLen is the length of generated CHAP secrets: 20 base32 characters
// from crypto/rand, 100 bits (RFC 3720 asks for at least 96), within every
// target's and iPXE's limits.
const secretLen = 20

// withSecret returns ops plus, when spec asks for CHAP, an operation that
// creates the node's CHAP credentials unless they exist, and those
// credentials (nil without CHAP). Credentials are made once and kept for
// the node's life, so that turning CHAP off and on again, or a retry, does
// not change what the node was told.
func withSecret(ref state.Ref, spec *sanbootv1.NodeSpec, ops ...clientv3.Op) ([]clientv3.Op, *sanbootv1.ChapSecret, error) {
	if !spec.GetChap() {
		return ops, nil, nil
	}
	sec := &sanbootv1.ChapSecret{
		User:         ref.Project + "." + ref.Name,
		Secret:       newSecret(),
		MutualUser:   ref.Project + "." + ref.Name + ".target",
		MutualSecret: newSecret(),
	}
	key := api.SecretKey(ref.Project, ref.Name)
	put, err := kv.PutOp(key, sec)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "encode CHAP secret: %v", err)
	}
	create := clientv3.OpTxn([]clientv3.Cmp{kv.Unchanged(key, 0)}, []clientv3.Op{put}, nil)
	return append(ops, create), sec, nil
}

// newSecret returns a random CHAP secret. LIO takes any value that starts
// with "NULL" for "no value" (every login then fails), so such a draw is
// drawn again.
func newSecret() string {
	for {
		if s := rand.Text()[:secretLen]; !strings.HasPrefix(s, "NULL") {
			return s
		}
	}
}
