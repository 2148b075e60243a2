// Package members opens the agent's gRPC connections to a control-plane
// member's API. The agent never listens: for the bytes of an image (an
// upload to fetch, an export to push) it connects to the member that
// holds or wants them, whose API addresses it reads from etcd at
// api.MemberKey(name), where the member keeps them under a lease.
package members

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/dial"
	"github.com/sanboot/sanboot/internal/kv"
)

// ErrNotRegistered: the member has no registration in etcd (it is down,
// or never existed).
var ErrNotRegistered = errors.New("control-plane member is not registered")

// Dial looks up member in etcd and returns a connection to its API (package
// dial): every address it registered, the first that answers used. With a
// nil tlsConfig the connection is plaintext. The caller closes it.
func Dial(ctx context.Context, cli *clientv3.Client, member string, tlsConfig *tls.Config) (*grpc.ClientConn, error) {
	if err := api.ValidateName("member", member); err != nil {
		return nil, err
	}
	var m sanbootv1.Member
	if _, err := kv.Get(ctx, cli, api.MemberKey(member), &m); errors.Is(err, kv.ErrNotFound) {
		return nil, fmt.Errorf("control-plane member %q: %w (down?)", member, ErrNotRegistered)
	} else if err != nil {
		return nil, fmt.Errorf("read control-plane member %q from etcd: %w", member, err)
	}
	if len(m.GetApiEndpoints()) == 0 {
		return nil, fmt.Errorf("control-plane member %q registered no API address: %w", member, ErrNotRegistered)
	}
	conn, err := dial.Dial(dial.Options{Endpoints: m.GetApiEndpoints(), TLS: tlsConfig, Name: member})
	if err != nil {
		return nil, fmt.Errorf("connect to control-plane member %q at %v: %w", member, m.GetApiEndpoints(), err)
	}
	return conn, nil
}
