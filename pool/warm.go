package pool

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cenkalti/backoff/v5"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool/snapshots"
)

// childState is where a sandbox is from the supervisor's point of view.
type childState int

const (
	childCreating childState = iota // runsc create in flight (takes a slot)
	childReady                      // in its pool's ready list
	childClaimed                    // a client's
	childRetiring                   // told to go; no longer counted
)

// child is one sandbox actor the supervisor spawned.
type child struct {
	pid   *actor.PID
	ref   *actors.Ref
	state childState
	// pool is the warm pool that started it; nil for a client's create.
	pool *warmPool
	// snapshot and version name what it started from (Info.Name and
	// Info.File; "" for the base rootfs).
	snapshot, version string
	// result is where the actor puts its creation result (buffered, 1);
	// client, for a client's create, is where the supervisor passes it on.
	result, client chan error
	// expired: older than max_age, replaced as soon as a refill is ready.
	expired bool
	// started is when its creation began; ready when it joined the pool.
	started, ready time.Time
	// restore: made from a checkpoint.
	restore bool
	// ended: a claimed sandbox gone from the host (actors.Ended), its actor
	// still ending.
	ended bool
}

// outcome is the creation result the actor left, errEndedWhileCreating if
// it left none.
func (c *child) outcome() error {
	select {
	case err := <-c.result:
		return err
	default:
		return errEndedWhileCreating
	}
}

// warmPool keeps cfg.Warm sandboxes of one snapshot ready.
type warmPool struct {
	cfg   PoolConfig
	label string
	// auto marks a pool made by auto_warm rather than by the config.
	auto bool
	// removed marks a pool dropped by Reconfigure: its sandboxes still
	// creating are retired when ready.
	removed bool

	// version is the newest snapshot version known (Info.File), as of
	// versionTime (Info.Created); ready sandboxes of another are stale.
	version     string
	versionTime time.Time

	ready    []*child // oldest first: claims take the oldest
	creating int
	// live counts this pool's sandboxes: creating, ready and claimed.
	live int

	hits, misses uint64

	// Failing creates back off exponentially with jitter.
	backoff   *backoff.ExponentialBackOff
	failures  int
	lastErr   string
	notBefore time.Time
}

func newWarmPool(cfg PoolConfig, b Backoff) *warmPool {
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = b.Initial
	eb.MaxInterval = b.Max
	eb.RandomizationFactor = 0.3
	eb.Multiplier = 2
	return &warmPool{cfg: cfg, label: cfg.Label(), backoff: eb}
}

// want is how many more sandboxes the pool needs started.
func (w *warmPool) want() int {
	if w.removed {
		return 0
	}
	fresh := 0
	for _, c := range w.ready {
		if !c.expired {
			fresh++
		}
	}
	n := w.cfg.Warm - fresh - w.creating
	if w.cfg.Max > 0 {
		n = min(n, w.cfg.Max-w.live)
	}
	return max(n, 0)
}

// take removes and returns the oldest ready sandbox of the given snapshot
// version ("" matches anything: the base rootfs has one version).
func (w *warmPool) take(version string) *child {
	for i, c := range w.ready {
		if version == "" || c.version == version {
			w.ready = append(w.ready[:i], w.ready[i+1:]...)
			return c
		}
	}
	return nil
}

// drop removes c from the ready list if it is there.
func (w *warmPool) drop(c *child) {
	for i, r := range w.ready {
		if r == c {
			w.ready = append(w.ready[:i], w.ready[i+1:]...)
			return
		}
	}
}

// newer reports whether info is a newer version than the pool knows; the
// pool then adopts it.
func (w *warmPool) newer(info snapshots.Info) bool {
	if info.File == w.version || !w.versionTime.IsZero() && info.Created.Before(w.versionTime) {
		return false
	}
	w.version, w.versionTime = info.File, info.Created
	return true
}

// failed records a failed create (or a death) and picks when to try again.
func (w *warmPool) failed(err error, now time.Time) time.Duration {
	w.failures++
	w.lastErr = err.Error()
	wait := w.backoff.NextBackOff()
	w.notBefore = now.Add(wait)
	return wait
}

func (w *warmPool) succeeded() {
	w.failures = 0
	w.lastErr = ""
	w.notBefore = time.Time{}
	w.backoff.Reset()
}

// progressing is false while creates keep failing.
func (w *warmPool) progressing() bool { return w.failures == 0 }
