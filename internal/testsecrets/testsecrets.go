// Package testsecrets records the secrets a test made (CHAP secrets,
// private keys, boot tokens) in the file the environment variable
// SANBOOT_SECRETS names, so that hack/test.sh can scan every log and output
// the suite produced for them at the end: none may appear. The file lives
// outside every log directory. Without the variable nothing is recorded.
package testsecrets

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Env is the variable that names the file.
const Env = "SANBOOT_SECRETS"

// Record appends each non-empty secret, one per line.
func Record(secrets ...string) error {
	path := os.Getenv(Env)
	if path == "" {
		return nil
	}
	var b strings.Builder
	for _, s := range secrets {
		if s = strings.TrimSpace(s); s != "" && !strings.Contains(s, "\n") {
			b.WriteString(s + "\n")
		}
	}
	if b.Len() == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record secrets in $%s: %w", Env, err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("record secrets in $%s: %w", Env, err)
	}
	return f.Close()
}

// RecordKeyFiles records the private keys in PEM files: the first line of
// each one's base64 body, which holds key material (the scan looks for
// that line, as a log that printed the key would hold it).
func RecordKeyFiles(paths ...string) error {
	var lines []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("record the key in %s: %w", p, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if l := sc.Text(); l != "" && !strings.HasPrefix(l, "-----") {
				lines = append(lines, l)
				break
			}
		}
	}
	return Record(lines...)
}
