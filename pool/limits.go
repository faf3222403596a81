package pool

import (
	"errors"
	"fmt"
	"time"

	"github.com/sandpool/sandpool/pool/snapshots"
)

// Limits are the pool settings an operator tunes; Reconfigure changes them
// on a running server.
type Limits struct {
	// MaxSandboxes caps live sandboxes: warm, creating and claimed ones.
	MaxSandboxes int
	// CreateConcurrency caps runsc creations in flight, refills and
	// clients' cold creates together (default 2).
	CreateConcurrency int
	// AutoWarm, when positive, gives every snapshot created on this server
	// (that has no configured pool) a pool of that many warm sandboxes.
	AutoWarm int
	// Pools are the warm pools, at most one per snapshot.
	Pools []PoolConfig
}

// PoolConfig is one warm pool.
type PoolConfig struct {
	// Snapshot is the filesystem snapshot its sandboxes start from; ""
	// is the base rootfs.
	Snapshot string
	// Warm is how many ready sandboxes the pool keeps.
	Warm int
	// Max caps the live sandboxes this pool started (ready, creating and
	// claimed); refills wait below it. 0 means only MaxSandboxes applies.
	Max int
	// MaxAge recycles a ready sandbox this old; 0 keeps it forever.
	MaxAge time.Duration
}

// Label names the pool in metrics and /pools. "@" cannot start a snapshot
// name, so the base pool never collides with a snapshot's.
func (c PoolConfig) Label() string { return poolLabel(c.Snapshot) }

const (
	baseLabel = "@base"
	// noPoolLabel is the label of creates for a snapshot without a pool.
	noPoolLabel = "@none"
)

func poolLabel(snapshot string) string {
	if snapshot == "" {
		return baseLabel
	}
	return snapshot
}

// Validate checks limits; snapshotsEnabled says whether snapshot pools can
// work at all.
func (l Limits) Validate(snapshotsEnabled bool) error {
	var errs []error
	if l.MaxSandboxes <= 0 {
		errs = append(errs, fmt.Errorf("max_sandboxes must be positive, got %d", l.MaxSandboxes))
	}
	if l.CreateConcurrency <= 0 {
		errs = append(errs, fmt.Errorf("create_concurrency must be positive, got %d", l.CreateConcurrency))
	}
	if l.AutoWarm < 0 {
		errs = append(errs, fmt.Errorf("auto_warm must be >= 0, got %d", l.AutoWarm))
	}
	if l.AutoWarm > 0 && !snapshotsEnabled {
		errs = append(errs, errors.New("auto_warm needs filesystem snapshots: set filesystem_snapshot_path"))
	}
	seen := map[string]bool{}
	warm := 0
	for i, p := range l.Pools {
		name := fmt.Sprintf("pools[%d] (%s)", i, p.Label())
		if p.Snapshot != "" {
			if err := snapshots.ValidateName(p.Snapshot); err != nil {
				errs = append(errs, fmt.Errorf("pools[%d]: %w", i, err))
			} else if !snapshotsEnabled {
				errs = append(errs, fmt.Errorf("%s: snapshot pools need filesystem snapshots: set filesystem_snapshot_path", name))
			}
		}
		if seen[p.Snapshot] {
			errs = append(errs, fmt.Errorf("%s: a second pool for the same snapshot", name))
		}
		seen[p.Snapshot] = true
		if p.Warm < 0 {
			errs = append(errs, fmt.Errorf("%s: warm must be >= 0, got %d", name, p.Warm))
		}
		if p.Max < 0 || p.Max > 0 && p.Max < p.Warm {
			errs = append(errs, fmt.Errorf("%s: max must be 0 (no limit) or at least warm (%d), got %d", name, p.Warm, p.Max))
		}
		if p.MaxAge < 0 {
			errs = append(errs, fmt.Errorf("%s: max_age must be >= 0, got %v", name, p.MaxAge))
		}
		warm += p.Warm
	}
	if l.MaxSandboxes > 0 && warm > l.MaxSandboxes {
		errs = append(errs, fmt.Errorf("the pools keep %d sandboxes warm, more than max_sandboxes (%d)", warm, l.MaxSandboxes))
	}
	return errors.Join(errs...)
}
