// Command centralino is the Linea Amica switching core.
//
//	centralino serve [--config FILE] [--log-format text|json] [--log-level LEVEL]
//	centralino check-config FILE
//	centralino directory [--redis URL | --file FILE] COMMAND ...
//
// With no --config, serve runs the demo network compiled into the binary.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/media"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
	"github.com/lineamica/centralino/sip"
)

const usage = `usage:
  centralino serve [--config FILE] [--log-format text|json] [--log-level debug|info|warn|error]
  centralino check-config FILE
  centralino directory [--redis URL | --file FILE] COMMAND   (centralino directory --help)
  centralino faq [--api URL] [--agency CODE] check|import FILE   (centralino faq --help)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "check-config":
		err = checkConfig(args[1:], stdout)
	case "directory":
		err = directoryCmd(args[1:], stdout)
	case "faq":
		err = faqCmd(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "centralino:", err)
	return 1
}

func checkConfig(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("check-config: want exactly one FILE")
	}
	cfg, err := configs.Load(args[0])
	if err != nil {
		return err
	}
	if err := checkModules(cfg); err != nil {
		return err
	}
	if err := provisionModules(cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d agencies, %d users, %d listeners)\n", args[0], len(cfg.Network.Agencies), len(cfg.Network.Users), len(cfg.Listen))
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format: %q is not one of text, json", format)
}

// checkModules reports a module the config enables but this binary lacks.
func checkModules(cfg *configs.Config) error {
	known := modules.Available()
	for i, m := range cfg.Modules {
		if !slices.Contains(known, m.Name) {
			return fmt.Errorf("config: modules[%d].name: unknown module %q (this binary has: %s)", i, m.Name, strings.Join(known, ", "))
		}
	}
	return nil
}

// provisionModules provisions the enabled modules in a sandbox (a private
// bus, mux and memory store, no logs) without running them, so that their
// options are checked as the switch will check them; no mailbox is read,
// nothing is sent.
func provisionModules(cfg *configs.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bus := modules.NewBus(modules.BusOptions{})
	defer bus.Close(ctx)
	err := modules.Check(ctx, cfg.Modules, modules.Deps{Bus: bus, Mux: http.NewServeMux(), Store: kv.NewMemory(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// openShared opens what the modules' store, the operators' queue state and
// the node registry keep in the directory's Redis, or in memory without it.
// The Redis client honours its callers' deadlines.
func openShared(cfg *configs.Config) (modules.Store, routing.QueueState, *redis.Client, error) {
	if cfg.Directory.Backend != "redis" {
		return kv.NewMemory(), &routing.Queues{}, nil, nil
	}
	client, _, err := directory.NewRedisClient(cfg.Directory.RedisURL, true)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("config: directory.redis_url: %w", err)
	}
	return kv.NewRedis(client), &routing.RedisQueues{Client: client}, client, nil
}

// joinNodes announces this node to the others sharing the directory, when
// it is one of several (a cluster secret is set); nil otherwise.
func joinNodes(ctx context.Context, cfg *configs.Config, client *redis.Client, mux *http.ServeMux, log *slog.Logger) (*directory.Nodes, []byte, error) {
	secret, err := cfg.Cluster.SecretBytes()
	if err != nil || secret == nil {
		if client != nil && err == nil {
			log.Info("no cluster.secret: a single node; phones registered on another node would be rung directly, not through it")
		}
		return nil, nil, err
	}
	addr, err := cfg.NodeAddress()
	if err != nil {
		return nil, nil, err
	}
	self := directory.Node{ID: cfg.NodeID, Addr: addr, Transport: cfg.Cluster.Transport}
	nodes, err := directory.NewNodes(ctx, client, self, time.Duration(cfg.Cluster.Heartbeat), log)
	if err != nil {
		return nil, nil, err
	}
	mux.HandleFunc("GET /api/nodes", func(w http.ResponseWriter, r *http.Request) {
		list, err := nodes.List(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, list)
	})
	return nodes, secret, nil
}

// openStore opens the directory the config names.
func openStore(ctx context.Context, cfg *configs.Config, reg prometheus.Registerer, log *slog.Logger) (directory.Store, error) {
	if cfg.Directory.Backend == "redis" {
		return directory.NewRedis(ctx, cfg.Directory.RedisURL, directory.RedisOptions{Registerer: reg, Logger: log, WriteBack: time.Duration(cfg.Directory.WriteBack)})
	}
	return directory.NewMemory(), nil
}

// redisLog sends go-redis's own messages (a line per failed dial while Redis
// is down) to debug level: the directory logs outages once, itself.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.log.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML config file (default: the embedded demo network)")
	logFormat := fs.String("log-format", "", "text or json (overrides the config)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides the config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := configs.Demo()
	if *configFile != "" {
		var err error
		if cfg, err = configs.Load(*configFile); err != nil {
			return err
		}
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	log, err := newLogger(stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	redis.SetLogger(redisLog{log})
	if os.Getenv("GOGC") == "" {
		// The live heap is small (bindings, caches) and the allocation rate
		// high (a parsed message per datagram): collecting when the heap has
		// grown to 5× the live heap rather than 2× spends about a quarter of
		// the GC CPU. GOGC in the environment decides otherwise.
		debug.SetGCPercent(400)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := openStore(ctx, cfg, reg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := directory.Load(ctx, store, cfg.Agencies(), cfg.Users()); err != nil {
		return fmt.Errorf("loading the network into the directory: %w", err)
	}

	if err := checkModules(cfg); err != nil {
		return err
	}
	bus := modules.NewBus(modules.BusOptions{Logger: log, Registerer: reg})
	mux := http.NewServeMux()
	moduleStore, queues, shared, err := openShared(cfg)
	if err != nil {
		return err
	}
	if shared != nil {
		defer shared.Close()
	}
	running, err := modules.Start(ctx, cfg.Modules, modules.Deps{Bus: bus, Mux: mux, Store: moduleStore, Logger: log, Metrics: reg,
		Agencies: directoryAgencies{store, log}})
	if err != nil {
		return err
	}
	rateAlias(mux, cfg)

	swCfg, err := switchConfig(cfg)
	if err != nil {
		return err
	}
	nodes, secret, err := joinNodes(ctx, cfg, shared, mux, log)
	if err != nil {
		return err
	}
	swCfg.NodeSecret = secret
	trunks := routing.NewTrunks(cfg.Trunks)
	router := &routing.Router{Dir: store, RingTimeout: time.Duration(cfg.Proxy.RingTimeout), Queues: queues, Trunks: trunks, Log: log}
	(&routing.QueueAPI{Dir: store, Queues: queues}).Register(mux)
	reg.MustRegister(routing.OperatorCollector{Dir: store, Queues: queues})
	deps := sip.Deps{Dir: store, Router: router, Queues: queues, Events: bus, Headers: running, Handoff: running, Metrics: reg, Log: log, Trunks: trunks}
	if nodes != nil {
		defer nodes.Close()
		deps.Peers = nodes
	}
	if relay, err := newRelay(cfg, reg, log); err != nil {
		return err
	} else if relay != nil {
		defer relay.Close()
		deps.Relay = relay
	}
	sw, err := sip.New(swCfg, deps)
	if err != nil {
		return err
	}

	httpSrv, err := startHTTP(cfg.HTTP, mux, reg, store, sw, log)
	if err != nil {
		return err
	}
	if err := sw.Serve(ctx); err != nil {
		return err
	}
	log.Info("centralino ready", "node", cfg.NodeID, "realm", cfg.Realm, "http", cfg.HTTP.Addr,
		"directory", cfg.Directory.Backend, "agencies", len(cfg.Network.Agencies), "users", len(cfg.Network.Users))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	sig := <-sigs
	drain(sw, time.Duration(cfg.Proxy.DrainPeriod), sigs, log.With("signal", sig.String()))
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The switch first, then the bus, so that the modules handle the last
	// events, then the modules.
	sw.Close()
	stop()
	if err := bus.Close(shutdownCtx); err != nil {
		log.Warn("module events left unhandled at shutdown", "error", err)
	}
	if err := running.Stop(shutdownCtx); err != nil {
		log.Warn("module stop", "error", err)
	}
	_ = httpSrv.Shutdown(shutdownCtx)
	log.Info("stopped")
	return nil
}

// drain refuses new calls and waits for the calls in progress to end, at most
// period; a second signal ends the wait.
func drain(sw *sip.Switch, period time.Duration, sigs <-chan os.Signal, log *slog.Logger) {
	sw.Drain()
	log.Info("draining: new calls get 503", "active_calls", sw.ActiveCalls(), "period", period)
	deadline := time.NewTimer(period)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for sw.ActiveCalls() > 0 {
		select {
		case <-deadline.C:
			log.Warn("drain period over with calls still up", "active_calls", sw.ActiveCalls())
			return
		case <-sigs:
			log.Warn("second signal: stopping now", "active_calls", sw.ActiveCalls())
			return
		case <-tick.C:
		}
	}
}

// newRelay starts the media relay unless no call can ever be anchored.
func newRelay(cfg *configs.Config, reg prometheus.Registerer, log *slog.Logger) (*media.Relay, error) {
	if !cfg.RelayUsed() {
		return nil, nil
	}
	v4, v6, err := cfg.MediaAddresses()
	if err != nil {
		return nil, err
	}
	kernel, _ := media.ParseKernelMode(cfg.Media.Kernel) // validated with the config
	return media.NewRelay(media.Config{
		PortMin: cfg.Media.PortMin, PortMax: cfg.Media.PortMax, Kernel: kernel,
		BindIPv4: v4, AdvertiseIPv4: v4, BindIPv6: v6, AdvertiseIPv6: v6,
		Timeout: time.Duration(cfg.Media.Timeout), HoldTimeout: time.Duration(cfg.Media.HoldTimeout),
		Registerer: reg, Logger: log.With("component", "media"),
	})
}

func switchConfig(cfg *configs.Config) (sip.Config, error) {
	sc := sip.Config{
		NodeID:         cfg.NodeID,
		Realm:          cfg.Realm,
		Advertise:      cfg.Advertise,
		AdvertiseIPv6:  cfg.AdvertiseIPv6,
		MinExpires:     time.Duration(cfg.Registrar.MinExpires) * time.Second,
		MaxExpires:     time.Duration(cfg.Registrar.MaxExpires) * time.Second,
		DefaultExpires: time.Duration(cfg.Registrar.DefaultExpires) * time.Second,
		Algorithms:     cfg.Auth.Algorithms,
		NonceTTL:       time.Duration(cfg.Auth.NonceTTL),
		Trusted:        cfg.Auth.TrustedPrefixes(),
		MaxFailures:    cfg.Auth.MaxFailures,
		FailureWindow:  time.Duration(cfg.Auth.FailureWindow),
		BlockFor:       time.Duration(cfg.Auth.BlockFor),
		RingTimeout:    time.Duration(cfg.Proxy.RingTimeout),
		Anchor:         cfg.Media.Anchor,
		FloodRate:      cfg.Auth.FloodRate,
		MaxCallRate:    cfg.Proxy.MaxCallRate,
	}
	for i, l := range cfg.Listen {
		sl := sip.Listener{Transport: l.Transport, Addr: l.Addr}
		if l.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				return sc, fmt.Errorf("config: listen[%d]: %w", i, err)
			}
			sl.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		sc.Listeners = append(sc.Listeners, sl)
	}
	return sc, nil
}

// startHTTP serves /metrics, /healthz, /readyz, the read-only registration
// list and the trunks' health on one listener.
func startHTTP(cfg configs.HTTP, mux *http.ServeMux, reg *prometheus.Registry, store directory.Store, sw *sip.Switch, log *slog.Logger) (*http.Server, error) {
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		switch err := store.Ping(ctx); {
		case !sw.Serving(): // the HTTP listener starts first
			http.Error(w, "starting", http.StatusServiceUnavailable)
		case sw.Draining():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case err != nil:
			http.Error(w, "directory unavailable: "+err.Error(), http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ready\n")
		}
	})
	mux.HandleFunc("GET /api/registrations", func(w http.ResponseWriter, r *http.Request) {
		bindings, err := store.AllBindings(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, bindings)
	})
	mux.HandleFunc("GET /api/trunks", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, sw.Trunks())
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "error", err)
		}
	}()
	return srv, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("http response not written", "error", err)
	}
}
