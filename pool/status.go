package pool

import "time"

// Status is what GET /pools reports.
type Status struct {
	MaxSandboxes      int `json:"max_sandboxes"`
	CreateConcurrency int `json:"create_concurrency"`
	AutoWarm          int `json:"auto_warm"`
	// Sandboxes counts every live sandbox actor, warm ones included.
	Sandboxes int `json:"sandboxes"`
	// Creating counts creations in flight; Queued the clients' creates
	// waiting for a slot.
	Creating int          `json:"creating"`
	Queued   int          `json:"queued"`
	Pools    []PoolStatus `json:"pools"`
}

// PoolStatus is one warm pool's state.
type PoolStatus struct {
	Pool     string  `json:"pool"`
	Snapshot string  `json:"snapshot"`
	Auto     bool    `json:"auto"`
	Target   int     `json:"target"`
	Max      int     `json:"max"`
	MaxAge   float64 `json:"max_age"`
	Warm     int     `json:"warm"`
	Creating int     `json:"creating"`
	// InUse counts the pool's sandboxes that clients hold.
	InUse  int    `json:"in_use"`
	Claims Claims `json:"claims"`
	// HitRate is hits / (hits + misses); null before the first claim.
	HitRate *float64 `json:"hit_rate"`
	// Progressing is false while creates keep failing; LastError says why
	// and RetryIn when the next attempt is.
	Progressing bool    `json:"progressing"`
	Failures    int     `json:"consecutive_failures"`
	LastError   string  `json:"last_error,omitempty"`
	RetryIn     float64 `json:"retry_in_seconds,omitempty"`
	// Version is the snapshot file its sandboxes are built from.
	Version string `json:"version,omitempty"`
}

// Claims counts a pool's requests since start.
type Claims struct {
	Hit  uint64 `json:"hit"`
	Miss uint64 `json:"miss"`
}

func (s *supervisor) status() Status {
	st := Status{
		MaxSandboxes:      s.limits.MaxSandboxes,
		CreateConcurrency: s.limits.CreateConcurrency,
		AutoWarm:          s.limits.AutoWarm,
		Sandboxes:         len(s.children),
		Creating:          s.creating,
		Queued:            len(s.queue),
		Pools:             []PoolStatus{},
	}
	inUse := map[*warmPool]int{}
	for _, c := range s.children {
		if c.state == childClaimed && c.pool != nil {
			inUse[c.pool]++
		}
	}
	now := time.Now()
	for _, name := range s.poolNames() {
		wp := s.pools[name]
		ps := PoolStatus{
			Pool: wp.label, Snapshot: wp.cfg.Snapshot, Auto: wp.auto,
			Target: wp.cfg.Warm, Max: wp.cfg.Max, MaxAge: wp.cfg.MaxAge.Seconds(),
			Warm: len(wp.ready), Creating: wp.creating, InUse: inUse[wp],
			Claims:      Claims{Hit: wp.hits, Miss: wp.misses},
			Progressing: wp.progressing(), Failures: wp.failures, LastError: wp.lastErr,
			Version: wp.version,
		}
		if total := wp.hits + wp.misses; total > 0 {
			rate := float64(wp.hits) / float64(total)
			ps.HitRate = &rate
		}
		if wp.notBefore.After(now) {
			ps.RetryIn = wp.notBefore.Sub(now).Seconds()
		}
		st.Pools = append(st.Pools, ps)
	}
	return st
}
