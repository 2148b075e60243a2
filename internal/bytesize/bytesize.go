// Package bytesize reads and prints sizes the way every sanboot program
// takes them: "10GiB", "512MiB", "1.5TiB", "20GB" or a plain number of
// bytes, in flags, manifests and command arguments alike.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var units = []struct {
	suffix string
	bytes  int64
}{
	// Longest suffixes first, so that "GiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15},
	{"B", 1},
}

const help = "use a number of bytes or a number with a unit: KiB, MiB, GiB, TiB, PiB (powers of 1024) or kB, MB, GB, TB, PB (powers of 1000), e.g. 10GiB"

// Parse reads a size. Binary (KiB, MiB, ...) and decimal (kB, MB, ...)
// units are both accepted, with a whole or a decimal number; the result
// must be a positive whole number of bytes.
func Parse(s string) (int64, error) {
	in := strings.TrimSpace(s)
	num, mult := in, int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(in, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.bytes
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
		return 0, fmt.Errorf("%q is not a size: %s", s, help)
	}
	b := f * float64(mult)
	if b != math.Trunc(b) || b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is not a whole number of bytes: %s", s, help)
	}
	return int64(b), nil
}

// Format prints bytes in binary units: "10GiB", "1.5GiB", "512B".
func Format(b int64) string {
	names := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for i < len(names)-1 && b >= int64(1)<<(10*(i+1)) {
		i++
	}
	unit := int64(1) << (10 * i)
	if b%unit == 0 {
		return fmt.Sprintf("%d%s", b/unit, names[i])
	}
	return strconv.FormatFloat(float64(b)/float64(unit), 'f', 1, 64) + names[i]
}
