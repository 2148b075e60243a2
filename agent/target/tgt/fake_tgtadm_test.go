package tgt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/agent/target"
)

// fakeTgtadm is a FAKE tgtadm (a shell script) for unit tests without root:
// it answers "show" with nothing, accepts every change, and fails
// "account new" echoing its whole command line to stderr, the way a
// careless tool could.
const fakeTgtadm = `#!/bin/sh
case "$*" in
*"--mode portal --op show"*) echo "Portal: 127.0.0.1:3260,1"; exit 0;;
*"--op show"*) exit 0;;
*"--mode account --op new"*) echo "tgtadm: failed: $*" >&2; exit 22;;
esac
exit 0
`

func TestSecretsNeverInErrors(t *testing.T) {
	dir := t.TempDir()
	adm := filepath.Join(dir, "tgtadm")
	if err := os.WriteFile(adm, []byte(fakeTgtadm), 0o755); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	const secret = "very-SECRET-value-42"
	d := New(Config{ControlPort: 9, Tgtadm: adm})
	err := d.Ensure(context.Background(), target.Target{
		IQN: "iqn.2026-11.io.sanboot:default.n1", BackingPath: disk, SizeBytes: 1 << 20,
		Initiators: []string{"iqn.2026-11.io.sanboot:initiator.default.n1"}, Portals: []string{"127.0.0.1:3260"},
		Serial: "s1", CHAP: &target.CHAP{Incoming: target.Credentials{User: "u1", Secret: target.NewSecret(secret)}},
	})
	if err == nil {
		t.Fatal("Ensure succeeded although the fake tgtadm failed")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error shows the secret: %v", err)
	}
	if !strings.Contains(err.Error(), "--password="+redacted) || !strings.Contains(err.Error(), "create CHAP account \"u1\"") {
		t.Errorf("error = %v; want the command line with the password redacted", err)
	}
}
