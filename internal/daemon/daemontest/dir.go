package daemontest

import (
	"os"
	"testing"
)

func makeShortDir(t *testing.T) (string, error) {
	dir, err := os.MkdirTemp("", "sd")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir, nil
}
