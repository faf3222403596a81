// Package load drives virtual clients that each create a sandbox, run code,
// read all its output and kill the sandbox, in a loop, and reports latency
// percentiles, throughput and errors; a raw mode does the same work with
// the runsc CLI, so sandpool's figures can be quoted as ratios.
package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrRemote refuses a target that is not a loopback address.
var ErrRemote = errors.New("refusing a non-loopback target without --allow-remote")

// Defaults of Config.
const (
	DefaultConcurrency = 4
	DefaultStepTimeout = 60 * time.Second
	DefaultLanguage    = "bash"
	DefaultCode        = "echo hi"
)

// Languages are the languages a cycle can execute (the server's).
var Languages = []string{"python", "bash"}

// Config is one load run. It stops after Sandboxes cycles or Duration,
// whichever comes first; at least one of them must be set.
type Config struct {
	// URL is the server's base WebSocket URL (ws://host:port).
	URL string
	// Sandboxes is the number of cycles to run (0: until Duration).
	Sandboxes int
	// Concurrency is the number of virtual clients.
	Concurrency int
	// Duration stops starting new cycles after it (0: until Sandboxes).
	Duration time.Duration
	// Snapshot creates each sandbox from this filesystem snapshot.
	Snapshot string
	// Language and Code are what each cycle executes.
	Language string
	Code     string
	// Think is a pause between one client's cycles.
	Think time.Duration
	// StepTimeout bounds each step of a cycle (create, execute, kill).
	StepTimeout time.Duration
	// AllowRemote permits a non-loopback URL.
	AllowRemote bool
	// Raw, when set, runs the cycles with the runsc CLI instead of the server.
	Raw *RawConfig
	// Progress, when set, is called about twice a second during the run.
	Progress func(Progress)
}

// Progress is a running count, for a live progress line.
type Progress struct {
	Completed, Failed, InFlight int
	Elapsed                     time.Duration
}

// Stats summarises one latency, in milliseconds.
type Stats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Result is what a run measured.
type Result struct {
	Mode        string `json:"mode"` // "sandpool" or "raw-runsc"
	Target      string `json:"target"`
	Concurrency int    `json:"concurrency"`
	Completed   int    `json:"completed"`
	Failed      int    `json:"failed"`
	// Interrupted: the run was cancelled (Ctrl-C) before its count or
	// duration was reached.
	Interrupted bool    `json:"interrupted,omitempty"`
	Elapsed     float64 `json:"elapsed_seconds"`
	// Throughput is completed cycles per second of the run.
	Throughput float64 `json:"throughput_per_second"`
	// Latency: create (request -> running), first_output (execute -> first
	// output), done (execute -> exit), total (create request -> killed).
	Latency map[string]Stats `json:"latency_ms"`
	// Errors counts failed cycles by cause: the server's status, or
	// dial/closed/timeout with the step.
	Errors map[string]int `json:"errors"`
	// ErrorExamples keeps one message per cause.
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
}

// LatencyNames are the keys of Result.Latency, in report order.
var LatencyNames = []string{"create", "first_output", "done", "total"}

// sample is one successful cycle's timings; firstOutput is 0 when the
// code printed nothing.
type sample struct {
	create, firstOutput, done, total time.Duration
}

// cycler runs one create -> execute -> kill cycle.
type cycler interface {
	cycle(ctx context.Context) (sample, error)
	// close releases what the cycler holds (raw: its leftover containers).
	close() error
	mode() string
	target() string
}

// Runner runs a load.
type Runner struct {
	cfg Config
	cyc cycler
}

// New validates cfg and prepares the cycles.
func New(cfg Config) (*Runner, error) {
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.StepTimeout == 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	if cfg.Language == "" {
		cfg.Language = DefaultLanguage
	}
	if cfg.Code == "" {
		cfg.Code = DefaultCode
	}
	switch {
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("concurrency must be positive, not %d", cfg.Concurrency)
	case cfg.Sandboxes < 0:
		return nil, fmt.Errorf("sandboxes must not be negative, not %d", cfg.Sandboxes)
	case cfg.Duration < 0 || cfg.Think < 0 || cfg.StepTimeout < 0:
		return nil, errors.New("durations must not be negative")
	case cfg.Sandboxes == 0 && cfg.Duration == 0:
		return nil, errors.New("set a number of sandboxes, a duration, or both: a load must stop by itself")
	case !slices.Contains(Languages, cfg.Language):
		return nil, fmt.Errorf("unsupported language %q: python or bash", cfg.Language)
	}
	if cfg.Raw != nil {
		cyc, err := newRawCycler(*cfg.Raw, cfg)
		if err != nil {
			return nil, err
		}
		return &Runner{cfg: cfg, cyc: cyc}, nil
	}
	u, err := checkURL(cfg.URL, cfg.AllowRemote)
	if err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg, cyc: newWSCycler(u, cfg)}, nil
}

// checkURL parses a ws(s) or http(s) base URL and refuses non-loopback hosts
// unless allowRemote.
func checkURL(raw string, allowRemote bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("url %q: want ws://host:port", raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("url %q has no host", raw)
	}
	if !allowRemote && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("%w: %s", ErrRemote, u.Hostname())
	}
	return u, nil
}

// isLoopback reports whether host is a loopback IP, or a name that
// resolves only to loopback IPs (localhost).
func isLoopback(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	return !slices.ContainsFunc(ips, func(ip net.IP) bool { return !ip.IsLoopback() })
}

// Run runs the load until Sandboxes cycles have started, Duration has
// passed or ctx ends; cycles in flight then finish (each step is bounded
// by StepTimeout), so every sandbox created is also killed.
func (r *Runner) Run(ctx context.Context) (Result, error) {
	start := time.Now()
	var deadline time.Time
	if r.cfg.Duration > 0 {
		deadline = start.Add(r.cfg.Duration)
	}
	var (
		started     atomic.Int64
		interrupted atomic.Bool
		col         collector
		wg          sync.WaitGroup
	)
	// cancelled records a stop by ctx while cycles were still to run.
	cancelled := func() {
		if r.cfg.Sandboxes == 0 || started.Load() < int64(r.cfg.Sandboxes) {
			interrupted.Store(true)
		}
	}
	// take reserves the next cycle, if the run is not over.
	take := func() bool {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return false
		}
		if ctx.Err() != nil {
			cancelled()
			return false
		}
		return r.cfg.Sandboxes == 0 || started.Add(1) <= int64(r.cfg.Sandboxes)
	}
	for range r.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for take() {
				col.begin()
				s, err := r.cyc.cycle(context.WithoutCancel(ctx))
				col.end(s, err)
				if r.cfg.Think > 0 && !pause(ctx, r.cfg.Think, deadline) {
					cancelled()
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	if r.cfg.Progress != nil {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
	loop:
		for {
			select {
			case <-done:
				break loop
			case <-tick.C:
				r.cfg.Progress(col.progress(time.Since(start)))
			}
		}
	}
	<-done
	closeErr := r.cyc.close()
	res := col.result(r.cyc.mode(), r.cyc.target(), r.cfg.Concurrency, time.Since(start))
	res.Interrupted = interrupted.Load()
	return res, closeErr
}

// pause sleeps d unless ctx ends or the deadline passes first.
func pause(ctx context.Context, d time.Duration, deadline time.Time) bool {
	if !deadline.IsZero() && time.Until(deadline) < d {
		d = max(0, time.Until(deadline))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// collector gathers the outcomes of all clients.
type collector struct {
	mu                          sync.Mutex
	inFlight, completed, failed int
	create, first, done, total  []time.Duration
	errors                      map[string]int
	examples                    map[string]string
}

func (c *collector) begin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight++
}

func (c *collector) end(s sample, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight--
	if err != nil {
		c.failed++
		if c.errors == nil {
			c.errors, c.examples = map[string]int{}, map[string]string{}
		}
		cause := Cause(err)
		c.errors[cause]++
		if _, ok := c.examples[cause]; !ok {
			c.examples[cause] = err.Error()
		}
		return
	}
	c.completed++
	c.create = append(c.create, s.create)
	if s.firstOutput > 0 {
		c.first = append(c.first, s.firstOutput)
	}
	c.done = append(c.done, s.done)
	c.total = append(c.total, s.total)
}

func (c *collector) progress(elapsed time.Duration) Progress {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Progress{Completed: c.completed, Failed: c.failed, InFlight: c.inFlight, Elapsed: elapsed}
}

func (c *collector) result(mode, target string, concurrency int, elapsed time.Duration) Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := Result{
		Mode:        mode,
		Target:      target,
		Concurrency: concurrency,
		Completed:   c.completed,
		Failed:      c.failed,
		Elapsed:     elapsed.Seconds(),
		Latency: map[string]Stats{
			"create":       Summarize(c.create),
			"first_output": Summarize(c.first),
			"done":         Summarize(c.done),
			"total":        Summarize(c.total),
		},
		Errors:        map[string]int{},
		ErrorExamples: c.examples,
	}
	for k, v := range c.errors {
		res.Errors[k] = v
	}
	if elapsed > 0 {
		res.Throughput = float64(c.completed) / elapsed.Seconds()
	}
	return res
}

// Summarize gives the nearest-rank percentiles and the maximum of samples,
// in milliseconds; all zero for no samples.
func Summarize(samples []time.Duration) Stats {
	if len(samples) == 0 {
		return Stats{}
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	return Stats{
		N:   len(sorted),
		P50: ms(Percentile(sorted, 50)),
		P90: ms(Percentile(sorted, 90)),
		P99: ms(Percentile(sorted, 99)),
		Max: ms(sorted[len(sorted)-1]),
	}
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted
// samples: the smallest sample with at least p% of them at or below it.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps float noise (0.29*100 = 28.999...) from moving a rank.
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
