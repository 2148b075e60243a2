package boot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

// A boot token is 26 base32 characters from crypto/rand (130 bits). etcd
// keeps its SHA-256 and the uid of the node it was issued for, under a
// lease of the token's lifetime, at api.BootTokenKey. One token per node:
// issuing one replaces the last. The boot server deletes it (compare and
// delete, so only one fetch ever wins) when it serves the node's
// credentials.

// tokenLen is the length of a token.
const tokenLen = 26

// ErrBadToken is a token that is not (or no longer) the node's.
var ErrBadToken = errors.New("the boot token is not valid: it was used, it expired, or a newer one replaced it; get a new boot URL with: sanbootctl boot-script NODE --url")

// IssueToken makes a new one-time boot token for node ref (whose uid is
// uid), valid for ttl (DefaultTokenTTL when 0), and returns it. It
// replaces the node's last token.
func IssueToken(ctx context.Context, cli *clientv3.Client, ref state.Ref, uid string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	token := rand.Text()[:tokenLen]
	lease, err := cli.Grant(ctx, max(int64(ttl/time.Second), 1))
	if err != nil {
		return "", fmt.Errorf("boot token for %s: grant a lease: %w", ref, err)
	}
	put, err := kv.PutOp(api.BootTokenKey(ref.Project, ref.Name), &sanbootv1.BootToken{Sha256: tokenHash(token), NodeUid: uid}, clientv3.WithLease(lease.ID))
	if err != nil {
		return "", err
	}
	if _, err := cli.Do(ctx, put); err != nil {
		return "", fmt.Errorf("boot token for %s: write: %w", ref, err)
	}
	return token, nil
}

// validTokenForm reports whether s looks like a token (so that it can be
// echoed into a URL).
func validTokenForm(s string) bool {
	if len(s) != tokenLen {
		return false
	}
	for _, r := range s {
		if !('A' <= r && r <= 'Z' || '2' <= r && r <= '7') {
			return false
		}
	}
	return true
}

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// checkToken reports whether token is node ref's current token (for the
// node with uid) and returns the token record's mod revision, for
// consumeToken. A wrong token is ErrBadToken.
func checkToken(ctx context.Context, cli clientv3.KV, ref state.Ref, uid, token string) (int64, error) {
	var rec sanbootv1.BootToken
	rev, err := kv.Get(ctx, cli, api.BootTokenKey(ref.Project, ref.Name), &rec)
	if errors.Is(err, kv.ErrNotFound) {
		return 0, ErrBadToken
	}
	if err != nil {
		return 0, fmt.Errorf("read the boot token of %s: %w", ref, err)
	}
	if subtle.ConstantTimeCompare([]byte(rec.GetSha256()), []byte(tokenHash(token))) != 1 || rec.GetNodeUid() != uid {
		return 0, ErrBadToken
	}
	return rev, nil
}

// consumeToken deletes node ref's token if it is still the one checked at
// rev; otherwise (someone else used it first) it returns ErrBadToken.
func consumeToken(ctx context.Context, cli clientv3.KV, ref state.Ref, rev int64) error {
	key := api.BootTokenKey(ref.Project, ref.Name)
	resp, err := cli.Txn(ctx).If(kv.Unchanged(key, rev)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("consume the boot token of %s: %w", ref, err)
	}
	if !resp.Succeeded {
		return ErrBadToken
	}
	return nil
}
