package apiserver

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/view"
)

// metrics are the API server's Prometheus metrics: see RegisterMetrics.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	provision prometheus.Histogram
	nodes     *prometheus.Desc
	agents    *prometheus.Desc
	store     *prometheus.Desc
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sanboot_api_requests_total",
			Help: "API requests handled, by gRPC method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sanboot_api_request_duration_seconds",
			Help:    "Time to handle a unary API request (streams are not timed), by gRPC method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"method"}),
		provision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sanboot_node_provision_seconds",
			Help: "Time from a node's creation to its first Ready status, seen by this member's watch of the status records.",
			// 0.1 s to about 1.8 h: a clone takes well under a second, an
			// image that must first be fetched can take long.
			Buckets: prometheus.ExponentialBuckets(0.1, 3, 10),
		}),
		nodes: prometheus.NewDesc("sanboot_nodes",
			"Nodes by project and phase, as the API shows them.", []string{"project", "phase"}, nil),
		agents: prometheus.NewDesc("sanboot_agents",
			"Agents by state (Ready: its lease is alive and it serves its targets; NotReady: alive but not serving them; Unavailable: registered, lease gone).", []string{"state"}, nil),
		store: prometheus.NewDesc("sanboot_agent_store_bytes",
			"An agent's store as it last reported it: kind is capacity, free or used.", []string{"agent", "kind"}, nil),
	}
}

// RegisterMetrics registers the API server's metrics with reg:
//
//	sanboot_nodes{project,phase}             gauge, from the watch cache
//	sanboot_agents{state}                    gauge
//	sanboot_agent_store_bytes{agent,kind}    gauge, from the agent records
//	sanboot_node_provision_seconds           histogram, creation to Ready
//	sanboot_api_requests_total{method,code}  counter (with MetricsServerOptions)
//	sanboot_api_request_duration_seconds     histogram
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{s.metrics.requests, s.metrics.duration, s.metrics.provision, (*stateCollector)(s)} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// MetricsServerOptions count the API's requests; add them to the gRPC
// server's options.
func (s *Server) MetricsServerOptions() []grpc.ServerOption {
	m := s.metrics
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			m.duration.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
			m.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			m.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
			return err
		}),
	}
}

// observeReady records a node's provision latency when the cache sees it
// turn Ready for the first time. A node first seen already Ready counts too:
// its creation and its Ready status can reach the cache in one watch batch.
// A relist does not count old nodes again: the cache calls its change hook
// for watch batches only.
func (m *metrics) observeReady(old, cur *sanbootv1.Node) {
	if cur == nil || old.GetStatus().GetPhase() == api.PhaseReady || cur.GetStatus().GetPhase() != api.PhaseReady {
		return
	}
	if cur.GetMetadata().GetGeneration() > 1 || cur.GetMetadata().GetCreateTime() == nil {
		return // a spec change, not a provision: its intent time is not recorded
	}
	// The agent's time of the Ready status if it says, else now.
	ready := time.Now()
	if t := cur.GetStatus().GetUpdateTime(); t != nil {
		ready = t.AsTime()
	}
	if d := ready.Sub(cur.GetMetadata().GetCreateTime().AsTime()); d >= 0 {
		m.provision.Observe(d.Seconds())
	}
}

// stateCollector reads the node, agent and store gauges from the watch
// cache at each scrape.
type stateCollector Server

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.metrics.nodes
	ch <- c.metrics.agents
	ch <- c.metrics.store
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	type pp struct{ project, phase string }
	nodes := map[pp]int{}
	agents := map[string]int{api.AgentReady: 0, api.AgentNotReady: 0, api.AgentUnavailable: 0}
	cache := c.cache
	cache.lock()
	for ref, n := range cache.views {
		nodes[pp{ref.Project, n.phase}]++
	}
	for _, a := range view.Agents(cache.store) {
		agents[a.GetState()]++
		r := a.GetRecord()
		if r.GetCapacityBytes() > 0 || r.GetFreeBytes() > 0 {
			ch <- prometheus.MustNewConstMetric(c.metrics.store, prometheus.GaugeValue, float64(r.GetCapacityBytes()), r.GetName(), "capacity")
			ch <- prometheus.MustNewConstMetric(c.metrics.store, prometheus.GaugeValue, float64(r.GetFreeBytes()), r.GetName(), "free")
			ch <- prometheus.MustNewConstMetric(c.metrics.store, prometheus.GaugeValue, float64(r.GetCapacityBytes()-r.GetFreeBytes()), r.GetName(), "used")
		}
	}
	cache.unlock()
	for k, n := range nodes {
		ch <- prometheus.MustNewConstMetric(c.metrics.nodes, prometheus.GaugeValue, float64(n), k.project, k.phase)
	}
	for st, n := range agents {
		ch <- prometheus.MustNewConstMetric(c.metrics.agents, prometheus.GaugeValue, float64(n), st)
	}
}
