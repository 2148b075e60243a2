package controlplane

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sanboot/sanboot/controlplane/scheduler"
)

// schedulerMetrics follow the scheduler of the current leadership term
// (none on a member that is not the leader: its queue depth is 0).
type schedulerMetrics struct {
	current atomic.Pointer[scheduler.Scheduler]
	retries prometheus.Counter
}

func (m *schedulerMetrics) register(reg prometheus.Registerer) error {
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sanboot_scheduler_retries_total",
		Help: "Nodes the scheduler queued again after a failed plan or write.",
	})
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sanboot_scheduler_queue_depth",
		Help: "Nodes waiting for the scheduler (0 on a member that is not the leader).",
	}, func() float64 {
		if s := m.current.Load(); s != nil {
			return float64(s.QueueLen())
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.retries, depth} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// retried counts a retry; a no-op before register.
func (m *schedulerMetrics) retried() {
	if m.retries != nil {
		m.retries.Inc()
	}
}
