package directory

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// redisMetrics times every Redis command as a go-redis hook, holds the up
// gauge that Redis.watch keeps current and reads the write-back's backlog
// (held) at each scrape.
type redisMetrics struct {
	reg      prometheus.Registerer // nil: collectors live but are not exported
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	up       prometheus.Gauge
	held     prometheus.GaugeFunc
}

func newRedisMetrics(reg prometheus.Registerer, held func() int) (*redisMetrics, error) {
	m := &redisMetrics{
		reg: reg,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "centralino_redis_operation_duration_seconds",
			Help:    "Duration of Redis commands (op: command name, or pipeline).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_redis_errors_total",
			Help: "Redis commands that failed (a missing key is not a failure).",
		}, []string{"op"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "centralino_redis_up",
			Help: "1 if the last Redis health check succeeded, else 0.",
		}),
		held: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "centralino_redis_held_registrations",
			Help: "Registrations answered and not yet written to Redis (directory.write_back); it grows while Redis does not take them.",
		}, func() float64 { return float64(held()) }),
	}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *redisMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.duration, m.errors, m.up, m.held}
}

func (m *redisMetrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}

func (m *redisMetrics) observe(op string, start time.Time, err error) {
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, redis.Nil) {
		m.errors.WithLabelValues(op).Inc()
	}
}

func (m *redisMetrics) DialHook(next redis.DialHook) redis.DialHook { return next }

func (m *redisMetrics) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		m.observe(cmd.Name(), start, err)
		return err
	}
}

func (m *redisMetrics) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		m.observe("pipeline", start, err)
		return err
	}
}
