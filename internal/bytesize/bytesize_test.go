package bytesize

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // 0: an error
	}{
		{"10GiB", 10 << 30},
		{"512MiB", 512 << 20},
		{"1.5GiB", 1536 << 20},
		{"4096", 4096},
		{"4096B", 4096},
		{"10B", 10},
		{"20GB", 20e9},
		{"10GB", 10e9}, // the agent's --fake-capacity once refused this
		{"1 TiB", 1 << 40},
		{"3 GiB", 3 << 30},
		{"4 KiB", 4096},
		{"2PiB", 2 << 50},
		{"2kB", 2000},
		{"", 0},
		{"ten", 0},
		{"-1GiB", 0},
		{"-1", 0},
		{"0", 0},
		{"1.3B", 0},
		{"0.5B", 0},
		{"1.1KiB", 0},
		{"10GiBs", 0},
		{"NaNGiB", 0},
		{"99999999999PiB", 0},
	} {
		got, err := Parse(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("Parse(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {1024, "1KiB"}, {1536 << 20, "1.5GiB"}, {10 << 30, "10GiB"}, {2 << 40, "2TiB"}, {1000, "1000B"}, {1025, "1.0KiB"},
	} {
		if got := Format(tc.in); got != tc.want {
			t.Errorf("Format(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRoundTrip: what Format prints, Parse reads back to the same bytes
// where Format printed no rounding.
func TestRoundTrip(t *testing.T) {
	for _, b := range []int64{1, 512, 1 << 10, 3 << 29, 10 << 30, 7 << 40} {
		got, err := Parse(Format(b))
		if err != nil || got != b {
			t.Errorf("Parse(Format(%d)) = %d, %v", b, got, err)
		}
	}
}
