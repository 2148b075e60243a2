package cli

import (
	"fmt"
	"strings"
)

// parseLabels reads repeated --label key=value flags.
func parseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	labels := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q is not key=value", kv)
		}
		labels[k] = v
	}
	return labels, nil
}
