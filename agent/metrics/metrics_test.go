package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sanboot/sanboot/agent/target"
	faketarget "github.com/sanboot/sanboot/agent/target/fake"
)

// counting is a FAKE driver that says it made 7 requests.
type counting struct{ *faketarget.Driver }

func (counting) Requests() uint64 { return 7 }

// TestDriverKeepsWhatTheDriverCanDo: the wrapper of a SessionReporter is
// one, a driver that counts its requests gets them exported, and a plain
// driver gets neither.
func TestDriverKeepsWhatTheDriverCanDo(t *testing.T) {
	for _, tc := range []struct {
		name              string
		d                 target.Driver
		reporter, counted bool
	}{
		{"fake", faketarget.New(), true, false},
		{"counting", counting{faketarget.New()}, true, true},
		{"plain", struct{ target.Driver }{faketarget.New()}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			w, err := NewDriver(tc.d, reg)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := w.(target.SessionReporter); ok != tc.reporter {
				t.Errorf("wrapper is a SessionReporter: %v, want %v", ok, tc.reporter)
			}
			fams, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			counted := false
			for _, f := range fams {
				if f.GetName() == "sanboot_target_requests_total" {
					counted = true
					if v := f.GetMetric()[0].GetCounter().GetValue(); v != 7 {
						t.Errorf("sanboot_target_requests_total = %v, want 7", v)
					}
				}
			}
			if counted != tc.counted {
				t.Errorf("sanboot_target_requests_total exported: %v, want %v", counted, tc.counted)
			}
		})
	}
}
