package printers

import (
	"testing"
	"time"
)

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{45 * time.Second, "45s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{5*time.Minute + 30*time.Second, "5m30s"},
		{45 * time.Minute, "45m"},
		{3*time.Hour + 5*time.Minute, "3h5m"},
		{5 * time.Hour, "5h"},
		{20 * time.Hour, "20h"},
		{50 * time.Hour, "2d2h"},
		{72 * time.Hour, "3d"},
		{30 * 24 * time.Hour, "30d"},
		{800 * 24 * time.Hour, "2y70d"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
