package printers

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Age formats the time since t the way kubectl does ("45s", "5m30s",
// "3h", "12d"); "<unknown>" when t is unset.
func Age(now time.Time, t *timestamppb.Timestamp) string {
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

// OrNone prints an empty cell as "<none>".
func OrNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
