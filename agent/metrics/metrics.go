// Package metrics is the agent's Prometheus instrumentation: target driver
// operations by kind and result (a target.Driver that wraps the real one),
// the reconcile queue's depth and retries, and the store's bytes. Every
// metric is registered with the registry the caller gives (one per agent
// process), usually wrapped to carry an agent="NAME" label.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sanboot/sanboot/agent/target"
)

// Driver counts and times the operations of the driver it wraps.
type Driver struct {
	target.Driver
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewDriver wraps d and registers its metrics with reg:
//
//	sanboot_target_operations_total{op,result}     op: ensure, delete, list; result: ok, error
//	sanboot_target_operation_duration_seconds{op}
//	sanboot_target_requests_total                  requests to the target system, for a driver that counts them (tgt)
//
// A d that is a target.SessionReporter gets a wrapper that is one too
// (EnsureSessions counted as ensure, ListSessions not counted, as Sessions).
func NewDriver(d target.Driver, reg prometheus.Registerer) (target.Driver, error) {
	w, err := newDriver(d, reg)
	if err != nil {
		return nil, err
	}
	if sr, ok := d.(target.SessionReporter); ok {
		return &sessionDriver{Driver: w, sr: sr}, nil
	}
	return w, nil
}

func newDriver(d target.Driver, reg prometheus.Registerer) (*Driver, error) {
	w := &Driver{
		Driver: d,
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "sanboot_target_operations_total",
			Help:        "Operations on the iSCSI target system, by op (ensure, delete, list) and result (ok, error).",
			ConstLabels: prometheus.Labels{"driver": d.Name()},
		}, []string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "sanboot_target_operation_duration_seconds",
			Help:        "Time of an operation on the iSCSI target system, by op.",
			ConstLabels: prometheus.Labels{"driver": d.Name()},
			Buckets:     prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"op"}),
	}
	for _, op := range []string{"ensure", "delete", "list"} { // show zeros from the start
		for _, r := range []string{"ok", "error"} {
			w.ops.WithLabelValues(op, r)
		}
	}
	cs := []prometheus.Collector{w.ops, w.duration}
	if rc, ok := d.(requestCounter); ok {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "sanboot_target_requests_total",
			Help:        "Requests made to the iSCSI target system (tgt: tgtadm's requests to tgtd).",
			ConstLabels: prometheus.Labels{"driver": d.Name()},
		}, func() float64 { return float64(rc.Requests()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// requestCounter is a driver that counts its requests to the target
// system (tgt).
type requestCounter interface{ Requests() uint64 }

func (w *Driver) observe(op string, start time.Time, err error) {
	w.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil {
		result = "error"
	}
	w.ops.WithLabelValues(op, result).Inc()
}

// Ensure is the wrapped driver's Ensure, counted.
func (w *Driver) Ensure(ctx context.Context, t target.Target) error {
	start := time.Now()
	err := w.Driver.Ensure(ctx, t)
	w.observe("ensure", start, err)
	return err
}

// Delete is the wrapped driver's Delete, counted.
func (w *Driver) Delete(ctx context.Context, iqn string) error {
	start := time.Now()
	err := w.Driver.Delete(ctx, iqn)
	w.observe("delete", start, err)
	return err
}

// List is the wrapped driver's List, counted.
func (w *Driver) List(ctx context.Context) ([]target.Target, error) {
	start := time.Now()
	ts, err := w.Driver.List(ctx)
	w.observe("list", start, err)
	return ts, err
}

// sessionDriver counts the operations of a target.SessionReporter.
type sessionDriver struct {
	*Driver
	sr target.SessionReporter
}

// EnsureSessions is the wrapped driver's EnsureSessions, counted as an
// ensure.
func (w *sessionDriver) EnsureSessions(ctx context.Context, t target.Target) ([]target.Session, error) {
	start := time.Now()
	s, err := w.sr.EnsureSessions(ctx, t)
	w.observe("ensure", start, err)
	return s, err
}

// ListSessions is the wrapped driver's ListSessions.
func (w *sessionDriver) ListSessions(ctx context.Context) (map[string][]target.Session, error) {
	return w.sr.ListSessions(ctx)
}

// Names is the wrapped driver's target.Names, counted as a list.
func (w *Driver) Names(ctx context.Context) ([]string, error) {
	start := time.Now()
	names, err := target.Names(ctx, w.Driver)
	w.observe("list", start, err)
	return names, err
}

// Queue registers the reconcile queue's metrics and returns the function
// the reconciler calls on each retry (reconciler.Config.OnRetry):
//
//	sanboot_reconcile_queue_depth            nodes and images waiting
//	sanboot_reconcile_retries_total{kind}    kind: node, image
func Queue(reg prometheus.Registerer, depth func() int) (onRetry func(kind string), err error) {
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sanboot_reconcile_retries_total",
		Help: "Nodes and images queued again after their work failed, by kind.",
	}, []string{"kind"})
	retries.WithLabelValues("node")
	retries.WithLabelValues("image")
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sanboot_reconcile_queue_depth",
		Help: "Nodes and images waiting to be worked on.",
	}, func() float64 { return float64(depth()) })
	for _, c := range []prometheus.Collector{retries, g} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return func(kind string) { retries.WithLabelValues(kind).Inc() }, nil
}

// Store registers sanboot_store_bytes{kind} (capacity, free, used), read
// from capacity at each scrape (with a 5 s limit).
func Store(reg prometheus.Registerer, capacity func(context.Context) (total, free int64, err error)) error {
	return reg.Register(&storeCollector{
		capacity: capacity,
		desc:     prometheus.NewDesc("sanboot_store_bytes", "The agent's store: kind is capacity, free or used.", []string{"kind"}, nil),
	})
}

type storeCollector struct {
	capacity func(context.Context) (int64, int64, error)
	desc     *prometheus.Desc
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	total, free, err := c.capacity(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(total), "capacity")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(free), "free")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(total-free), "used")
}
