package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// age formats the time since t the way kubectl does ("45s", "5m30s",
// "3h", "12d"); "<unknown>" when t is unset.
func age(now time.Time, t *timestamppb.Timestamp) string {
	if t == nil || !t.IsValid() || (t.Seconds == 0 && t.Nanos == 0) {
		return "<unknown>"
	}
	return humanDuration(now.Sub(t.AsTime()))
}

func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	m, h, days := s/60, s/3600, s/86400
	switch {
	case s < 120:
		return fmt.Sprintf("%ds", s)
	case m < 10:
		if s%60 == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s%60)
	case h < 3:
		return fmt.Sprintf("%dm", m)
	case h < 8:
		if m%60 == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m%60)
	case h < 48:
		return fmt.Sprintf("%dh", h)
	case h < 192:
		if h%24 == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h%24)
	case days < 365*2:
		return fmt.Sprintf("%dd", days)
	default:
		return fmt.Sprintf("%dy%dd", days/365, days%365)
	}
}

var sizeUnits = []struct {
	suffix string
	bytes  int64
}{
	// Longest suffixes first, so that "GiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15},
	{"B", 1},
}

// parseSize reads a size such as "10GiB", "512MiB", "1.5TiB", "20GB" or a
// plain number of bytes. Binary (KiB, MiB, ...) and decimal (kB, MB, ...)
// units are both accepted; the result must be a whole number of bytes.
func parseSize(s string) (int64, error) {
	const help = "use a number of bytes or a number with a unit: KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000), e.g. 10GiB"
	in := strings.TrimSpace(s)
	num, mult := in, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(in, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(in, u.suffix)), u.bytes
			break
		}
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n <= 0 || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q is out of range: %s", s, help)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("size %q is not a size: %s", s, help)
	}
	b := f * float64(mult)
	if b != math.Trunc(b) || b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is not a whole number of bytes: %s", s, help)
	}
	return int64(b), nil
}

// formatSize prints bytes in binary units: "10GiB", "1.5GiB", "512B".
func formatSize(b int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for i < len(units)-1 && b >= int64(1)<<(10*(i+1)) {
		i++
	}
	unit := int64(1) << (10 * i)
	if b%unit == 0 {
		return fmt.Sprintf("%d%s", b/unit, units[i])
	}
	return strconv.FormatFloat(float64(b)/float64(unit), 'f', 1, 64) + units[i]
}

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

// orNone prints an empty cell as "<none>".
func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
