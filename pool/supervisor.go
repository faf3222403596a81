package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool/checkpoints"
	"github.com/sandpool/sandpool/pool/snapshots"
)

// Messages to the supervisor.
type (
	createRequest struct {
		ctx      context.Context
		settings actors.Settings
		sink     actors.Sink
		// from is the opened snapshot to start from; the sandbox actor
		// closes it, or the supervisor when no actor is made.
		from *snapshots.Snapshot
		// restore, when set, is the checkpoint to restore; afterExit
		// makes it wait for the sandbox's previous actor to end.
		restore   *checkpoints.Meta
		afterExit bool
		reply     chan<- createResult
	}
	lookupRequest struct {
		id    string
		reply chan<- lookupResult
	}
	shutdownRequest    struct{ done chan struct{} }
	statusRequest      struct{ reply chan<- Status }
	reconfigureRequest struct {
		limits Limits
		done   chan struct{}
	}
	// tick runs housekeeping: max_age, snapshot versions.
	tick struct{}
	// wake ends a backoff wait.
	wake struct{}
)

// errEndedWhileCreating is the result of a child that ended before its
// creation settled.
var errEndedWhileCreating = errors.New("sandbox actor ended while creating")

type createResult struct {
	ref *actors.Ref
	// created gets the sandbox's answer: nil once it runs (or, for a warm
	// one, once it accepted the claim).
	created <-chan error
	err     error
	// hit: a warm sandbox was claimed. label names the pool.
	hit   bool
	label string
}

// supervisor is the parent actor of every sandbox actor and the owner of the
// warm pools. Only it decides which sandbox is ready, claimed or retired.
type supervisor struct {
	pool   *Pool
	limits Limits
	// children by PID id.
	children map[string]*child
	pools    map[string]*warmPool // by snapshot name ("" = base)
	// queue holds clients' creates waiting for a creation slot; they go
	// before refills.
	queue    []createRequest
	creating int // children in childCreating: slots taken
	retiring int
	// ended counts claimed children gone from the host whose actor has
	// not terminated yet: they hold no slot.
	ended int
	// rr rotates refills across pools.
	rr int

	// exitWaiters are restores waiting for the sandbox's previous actor
	// to end, by sandbox id.
	exitWaiters map[string][]createRequest
	// lastRetention is when checkpoint retention last ran.
	lastRetention time.Time

	stopping   bool
	waiters    []chan struct{}
	wakeTimer  *time.Timer
	wakeAt     time.Time
	stopTicker chan struct{}
}

func newSupervisor(p *Pool) *supervisor {
	s := &supervisor{pool: p, children: map[string]*child{}, pools: map[string]*warmPool{}, exitWaiters: map[string][]createRequest{}}
	s.configure(p.cfg.Limits)
	return s
}

func (s *supervisor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		s.startTicker(ctx)
		s.schedule(ctx)
	case createRequest:
		s.onCreate(ctx, msg)
	case lookupRequest:
		msg.reply <- s.lookup(ctx, msg.id)
	case actors.Created:
		s.onCreated(ctx, msg)
	case actors.Died:
		s.onDied(ctx, msg)
	case actors.Ended:
		s.onEnded(ctx, msg.PID)
	case actors.SnapshotSaved:
		s.onSnapshotSaved(ctx, msg.Info)
	case *actor.Terminated:
		s.onTerminated(ctx, msg.Who)
	case tick:
		s.housekeeping(ctx)
		s.schedule(ctx)
	case wake:
		s.wakeAt = time.Time{}
		s.schedule(ctx)
	case statusRequest:
		msg.reply <- s.status()
	case reconfigureRequest:
		s.configure(msg.limits)
		s.trim(ctx)
		s.schedule(ctx)
		close(msg.done)
	case shutdownRequest:
		s.onShutdown(ctx, msg)
	}
}

// --- claims and cold creates ---

func (s *supervisor) onCreate(ctx actor.Context, req createRequest) {
	if s.stopping {
		s.refuse(req, ErrShuttingDown)
		return
	}
	label := noPoolLabel
	if req.restore != nil {
		id := req.restore.ID
		if c := s.childByID(ctx, id); c != nil {
			if req.afterExit {
				s.exitWaiters[id] = append(s.exitWaiters[id], req)
				return
			}
			s.refuse(req, ErrInUse)
			return
		}
		if s.restoreQueued(id) {
			s.refuse(req, ErrInUse)
			return
		}
	} else if wp := s.pools[req.settings.Snapshot]; wp != nil {
		label = wp.label
		version := ""
		if req.from != nil {
			version = req.from.Info.File
			s.adopt(ctx, wp, req.from.Info)
		}
		if c := wp.take(version); c != nil {
			wp.hits++
			closeSnapshot(req.from)
			req.reply <- s.claim(ctx, c, req, true)
			s.schedule(ctx) // refill behind the claim
			return
		}
		wp.misses++
	}
	if s.counted() >= s.limits.MaxSandboxes && !s.evict(ctx) {
		s.refuse(req, fmt.Errorf("%w: the server runs its maximum of %d sandboxes; try again later", ErrNoCapacity, s.limits.MaxSandboxes))
		return
	}
	s.queue = append(s.queue, req)
	s.schedule(ctx)
	if len(s.queue) > 0 {
		s.pool.log.Debug().Int("queued", len(s.queue)).Str("pool", label).Msg("creates wait for a slot")
	}
}

// childByID is the live actor of sandbox id.
func (s *supervisor) childByID(ctx actor.Context, id string) *child {
	return s.children[ctx.Self().Id+"/"+id]
}

func (s *supervisor) restoreQueued(id string) bool {
	return slices.ContainsFunc(s.queue, func(r createRequest) bool { return r.restore != nil && r.restore.ID == id })
}

// lookup tells an attach what sandbox id is: a client's, busy (being
// created or restored), or unknown here (never claimed warm ones included:
// their token was never given out).
func (s *supervisor) lookup(ctx actor.Context, id string) lookupResult {
	if s.restoreQueued(id) || len(s.exitWaiters[id]) > 0 {
		return lookupResult{busy: true}
	}
	c := s.childByID(ctx, id)
	switch {
	case c == nil || c.pool != nil && c.state != childClaimed:
		return lookupResult{}
	case c.state == childCreating:
		return lookupResult{busy: true}
	default:
		return lookupResult{ref: c.ref}
	}
}

func (s *supervisor) refuse(req createRequest, err error) {
	closeSnapshot(req.from)
	req.reply <- createResult{err: err, label: s.labelFor(req.settings.Snapshot)}
}

func (s *supervisor) labelFor(snapshot string) string {
	if wp := s.pools[snapshot]; wp != nil {
		return wp.label
	}
	return noPoolLabel
}

// claim hands ready sandbox c to the client of req.
func (s *supervisor) claim(ctx actor.Context, c *child, req createRequest, hit bool) createResult {
	c.state = childClaimed
	answer := make(chan error, 1)
	ctx.Send(c.pid, actors.Claim{Settings: req.settings, Sink: req.sink, Reply: answer})
	return createResult{ref: c.ref, created: answer, hit: hit, label: c.pool.label}
}

// counted is what the global cap counts: every sandbox not on its way out,
// plus clients' creates waiting for a slot.
func (s *supervisor) counted() int { return len(s.children) - s.retiring - s.ended + len(s.queue) }

// evict retires the oldest ready sandbox to make room for a client: warm
// sandboxes are a bet, a client is real.
func (s *supervisor) evict(ctx actor.Context) bool {
	var oldest *child
	for _, wp := range s.pools {
		if len(wp.ready) > 0 && (oldest == nil || wp.ready[0].ready.Before(oldest.ready)) {
			oldest = wp.ready[0]
		}
	}
	if oldest == nil {
		return false
	}
	oldest.pool.drop(oldest)
	s.retire(ctx, oldest, "making room for a client")
	return true
}

// --- starting sandboxes ---

// schedule starts creations while slots are free: clients' creates first,
// then refills in turn. It arms a timer for the earliest backoff end.
func (s *supervisor) schedule(ctx actor.Context) {
	if s.stopping {
		return
	}
	for s.creating < s.limits.CreateConcurrency {
		if len(s.queue) > 0 {
			req := s.queue[0]
			s.queue = s.queue[1:]
			s.startCold(ctx, req)
			continue
		}
		wp := s.nextRefill(time.Now())
		if wp == nil {
			break
		}
		s.startRefill(ctx, wp)
	}
	s.armWake(ctx)
}

// nextRefill picks the next pool that wants a sandbox and may have one now.
func (s *supervisor) nextRefill(now time.Time) *warmPool {
	if s.counted() >= s.limits.MaxSandboxes {
		return nil
	}
	names := s.poolNames()
	for i := range names {
		wp := s.pools[names[(s.rr+i)%len(names)]]
		if wp.want() > 0 && !now.Before(wp.notBefore) {
			s.rr = (s.rr + i + 1) % len(names)
			return wp
		}
	}
	return nil
}

func (s *supervisor) poolNames() []string {
	names := make([]string, 0, len(s.pools))
	for name := range s.pools {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func (s *supervisor) armWake(ctx actor.Context) {
	var at time.Time
	for _, wp := range s.pools {
		if wp.want() > 0 && !wp.notBefore.IsZero() && (at.IsZero() || wp.notBefore.Before(at)) {
			at = wp.notBefore
		}
	}
	if at.IsZero() || !at.After(time.Now()) || (!s.wakeAt.IsZero() && !at.Before(s.wakeAt)) {
		return
	}
	if s.wakeTimer != nil {
		s.wakeTimer.Stop()
	}
	s.wakeAt = at
	self, root := ctx.Self(), ctx.ActorSystem().Root
	s.wakeTimer = time.AfterFunc(time.Until(at), func() { root.Send(self, wake{}) })
}

func (s *supervisor) startCold(ctx actor.Context, req createRequest) {
	if err := req.ctx.Err(); err != nil {
		s.refuse(req, err) // the client left while waiting
		return
	}
	c, err := s.spawn(ctx, nil, req.settings, req.sink, req.from, req.restore)
	if err != nil {
		s.refuse(req, err)
		return
	}
	c.client = make(chan error, 1)
	req.reply <- createResult{ref: c.ref, created: c.client, label: s.labelFor(req.settings.Snapshot)}
}

func (s *supervisor) startRefill(ctx actor.Context, wp *warmPool) {
	var from *snapshots.Snapshot
	if wp.cfg.Snapshot != "" {
		var err error
		if from, err = s.pool.cfg.Snapshots.Open(wp.cfg.Snapshot); err != nil {
			s.refillFailed(ctx, wp, err)
			return
		}
		s.adopt(ctx, wp, from.Info)
	}
	if _, err := s.spawn(ctx, wp, actors.Settings{Snapshot: wp.cfg.Snapshot}, nil, from, nil); err != nil {
		closeSnapshot(from)
		s.refillFailed(ctx, wp, err)
	}
}

// spawn starts a sandbox actor: a warm one for wp, or a client's (wp nil),
// restored from a checkpoint when restore is set.
func (s *supervisor) spawn(ctx actor.Context, wp *warmPool, settings actors.Settings, sink actors.Sink, from *snapshots.Snapshot, restore *checkpoints.Meta) (*child, error) {
	cfg := s.pool.cfg
	id, token, tokenHash := actors.NewID(), actors.NewToken(), ""
	if restore != nil {
		// The token is not kept anywhere: only its hash.
		id, token, tokenHash = restore.ID, "", restore.TokenHash
	}
	result := make(chan error, 1)
	sb := actors.New(actors.Config{
		ID:                id,
		Token:             token,
		TokenHash:         tokenHash,
		Restore:           restore,
		Checkpoints:       cfg.Checkpoints,
		CheckpointTimeout: cfg.CheckpointTimeout,
		ReplayBuffer:      cfg.ReplayBuffer,
		Runtime:           cfg.Runtime,
		Settings:          settings,
		Sink:              sink,
		Created:           result,
		Logger:            cfg.Logger,
		CreateTimeout:     cfg.CreateTimeout,
		Snapshots:         cfg.Snapshots,
		SnapshotTimeout:   cfg.SnapshotTimeout,
		From:              from,
		Warm:              wp != nil,
		HealthInterval:    cfg.HealthInterval,
		OnState:           s.pool.metrics.onState,
	})
	pid, err := ctx.SpawnNamed(sb.Props(), id)
	if err != nil {
		return nil, fmt.Errorf("spawn sandbox actor: %w", err)
	}
	c := &child{
		pid:     pid,
		ref:     &actors.Ref{ID: id, Token: sb.Token(), PID: pid, Root: ctx.ActorSystem().Root, Done: sb.Done()},
		pool:    wp,
		started: time.Now(),
		result:  result,
		restore: restore != nil,
	}
	if from != nil {
		c.snapshot, c.version = from.Info.Name, from.Info.File
	}
	s.children[pid.Id] = c
	s.creating++
	if wp != nil {
		wp.creating++
		wp.live++
	}
	s.pool.live.Store(int64(len(s.children)))
	return c, nil
}

func (s *supervisor) refillFailed(ctx actor.Context, wp *warmPool, err error) {
	wait := wp.failed(err, time.Now())
	s.pool.metrics.createFailures.WithLabelValues(wp.label).Inc()
	s.pool.log.Warn().Err(err).Str("pool", wp.label).Int("failures", wp.failures).
		Dur("retry_in", wait).Msg("warm pool cannot create sandboxes")
	s.armWake(ctx)
}

// onCreated takes the result the actor left on its channel.
func (s *supervisor) onCreated(ctx actor.Context, msg actors.Created) {
	if c := s.children[msg.PID.Id]; c != nil && c.state == childCreating {
		s.createFinished(ctx, c, c.outcome())
		s.schedule(ctx)
	}
}

// createFinished frees the creation slot and settles the child: a client's
// sandbox goes to its client, a warm one joins its pool unless the pool no
// longer wants it. It runs once per child, from onCreated or, when the
// child's Terminated overtook its Created, from onTerminated.
func (s *supervisor) createFinished(ctx actor.Context, c *child, err error) {
	s.creating--
	wp := c.pool
	kind := "cold"
	if wp != nil {
		kind = "warm"
		wp.creating--
	} else if c.restore {
		kind = "restore"
	}
	s.pool.metrics.createSeconds.WithLabelValues(kind).Observe(time.Since(c.started).Seconds())
	switch {
	case wp == nil:
		c.state = childClaimed
		if err != nil && !errors.Is(err, actors.ErrShuttingDown) {
			s.pool.metrics.createFailures.WithLabelValues(s.labelFor(c.snapshot)).Inc()
		}
		c.client <- err
	case err != nil:
		c.state = childRetiring // the actor ends itself
		s.retiring++
		s.refillFailed(ctx, wp, err)
	default:
		wp.succeeded()
		c.state = childReady
		c.ready = time.Now()
		s.place(ctx, c)
	}
}

// place puts a fresh warm sandbox where it is wanted most: a waiting
// client, else its pool, in place of an expired one if the pool is full.
func (s *supervisor) place(ctx actor.Context, c *child) {
	wp := c.pool
	switch {
	case s.handToQueued(ctx, c):
	case wp.removed:
		s.retire(ctx, c, "pool removed")
	case wp.cfg.Snapshot != "" && c.version != wp.version:
		s.retire(ctx, c, "snapshot was replaced")
	case len(wp.ready) < wp.cfg.Warm:
		wp.ready = append(wp.ready, c)
	default:
		// Make before break: an expired sandbox goes once its
		// replacement is ready.
		i := slices.IndexFunc(wp.ready, func(r *child) bool { return r.expired })
		if i < 0 {
			s.retire(ctx, c, "pool is full")
			return
		}
		old := wp.ready[i]
		wp.drop(old)
		s.retire(ctx, old, "max_age")
		wp.ready = append(wp.ready, c)
	}
}

// handToQueued gives a fresh warm sandbox to a client already waiting for
// a slot to create the same thing: it gets it sooner than its own create.
func (s *supervisor) handToQueued(ctx actor.Context, c *child) bool {
	for i, req := range s.queue {
		if req.settings.Snapshot != c.pool.cfg.Snapshot || req.ctx.Err() != nil {
			continue
		}
		if req.from != nil && req.from.Info.File != c.version {
			continue
		}
		s.queue = slices.Delete(s.queue, i, i+1)
		closeSnapshot(req.from)
		req.reply <- s.claim(ctx, c, req, false)
		return true
	}
	return false
}

func (s *supervisor) retire(ctx actor.Context, c *child, reason string) {
	c.state = childRetiring
	s.retiring++
	ctx.Send(c.pid, actors.Retire{Reason: reason})
}

func (s *supervisor) onDied(ctx actor.Context, msg actors.Died) {
	c := s.children[msg.PID.Id]
	if c == nil || c.state != childReady {
		return
	}
	c.pool.drop(c)
	s.retire(ctx, c, "died")
	// A pool whose sandboxes keep dying backs off like a failing one.
	s.refillFailed(ctx, c.pool, fmt.Errorf("warm sandbox %s died: %w", c.ref.ID, msg.Err))
	s.schedule(ctx)
}

// onEnded frees a claimed sandbox's slot as soon as it is gone from the
// host: its client may ask for another right after DELETED.
func (s *supervisor) onEnded(ctx actor.Context, pid *actor.PID) {
	c := s.children[pid.Id]
	if c == nil || c.state != childClaimed || c.ended {
		return
	}
	c.ended = true
	s.ended++
	s.schedule(ctx)
}

func (s *supervisor) onTerminated(ctx actor.Context, pid *actor.PID) {
	c := s.children[pid.Id]
	if c == nil {
		return
	}
	delete(s.children, pid.Id)
	if waiting := s.exitWaiters[c.ref.ID]; len(waiting) > 0 {
		// Its restore may start now that the id is free.
		delete(s.exitWaiters, c.ref.ID)
		defer func() {
			for _, req := range waiting {
				req.afterExit = false
				s.onCreate(ctx, req)
			}
		}()
	}
	s.pool.live.Store(int64(len(s.children)))
	if c.state == childCreating {
		// Its Terminated overtook its Created (system messages go
		// first). A sandbox that is gone is a failure whatever it said.
		err := c.outcome()
		if err == nil {
			err = errEndedWhileCreating
		}
		s.createFinished(ctx, c, err)
	}
	switch c.state {
	case childReady:
		c.pool.drop(c)
	case childRetiring:
		s.retiring--
	}
	if c.ended {
		s.ended--
	}
	if c.pool != nil {
		c.pool.live--
	}
	s.schedule(ctx)
	s.maybeDone()
}

// --- freshness ---

// adopt records a snapshot version; a newer one drains the pool's ready
// sandboxes of older versions.
func (s *supervisor) adopt(ctx actor.Context, wp *warmPool, info snapshots.Info) {
	if !wp.newer(info) {
		return
	}
	for _, c := range slices.Clone(wp.ready) {
		if c.version != wp.version {
			wp.drop(c)
			s.retire(ctx, c, "snapshot was replaced")
		}
	}
}

func (s *supervisor) onSnapshotSaved(ctx actor.Context, info snapshots.Info) {
	wp := s.pools[info.Name]
	if wp == nil && s.limits.AutoWarm > 0 && !s.stopping {
		wp = newWarmPool(PoolConfig{Snapshot: info.Name, Warm: s.limits.AutoWarm}, s.pool.cfg.Backoff)
		wp.auto = true
		s.pools[info.Name] = wp
		s.pool.log.Info().Str("pool", wp.label).Int("warm", wp.cfg.Warm).Msg("auto_warm: new pool")
	}
	if wp == nil {
		return
	}
	s.adopt(ctx, wp, info)
	// A pool that waited for its snapshot to exist tries again now.
	wp.notBefore = time.Time{}
	s.schedule(ctx)
}

// housekeeping recycles old sandboxes and notices snapshots replaced or
// removed by another process (sandpool snapshots rm).
func (s *supervisor) housekeeping(ctx actor.Context) {
	now := time.Now()
	s.expireCheckpoints(now)
	for name, wp := range s.pools {
		s.expire(ctx, wp, now)
		if name == "" || s.pool.cfg.Snapshots == nil {
			continue
		}
		info, err := s.pool.cfg.Snapshots.Stat(name)
		switch {
		case err == nil:
			s.adopt(ctx, wp, info)
		case errors.Is(err, snapshots.ErrNotFound):
			for _, c := range slices.Clone(wp.ready) {
				wp.drop(c)
				s.retire(ctx, c, "snapshot was removed")
			}
			wp.version, wp.versionTime = "", time.Time{}
			if wp.auto {
				wp.removed = true
				delete(s.pools, name)
			}
		}
	}
}

// expireCheckpoints removes, off the mailbox, the checkpoints of sandboxes
// not attached within the retention; live ones are never touched.
func (s *supervisor) expireCheckpoints(now time.Time) {
	store, retention := s.pool.cfg.Checkpoints, s.pool.cfg.CheckpointRetention
	if store == nil || retention <= 0 || now.Sub(s.lastRetention) < min(time.Hour, retention/4) {
		return
	}
	s.lastRetention = now
	live := map[string]bool{}
	for _, c := range s.children {
		live[c.ref.ID] = true
	}
	for _, req := range s.queue {
		if req.restore != nil {
			live[req.restore.ID] = true
		}
	}
	for id := range s.exitWaiters {
		live[id] = true
	}
	log := s.pool.log
	go func() {
		removed, err := store.Expire(now.Add(-retention), func(id string) bool { return live[id] })
		if len(removed) > 0 {
			log.Info().Strs("sandboxes", removed).Dur("retention", retention).Msg("removed expired checkpoints")
		}
		if err != nil {
			log.Warn().Err(err).Msg("checkpoint retention")
		}
	}()
}

// expire marks ready sandboxes older than max_age: a refill replaces each
// before it goes (see onCreated), so recycling never empties the pool. One
// kept past max_age plus a grace (refills failing) goes anyway.
func (s *supervisor) expire(ctx actor.Context, wp *warmPool, now time.Time) {
	if wp.cfg.MaxAge <= 0 {
		return
	}
	grace := min(wp.cfg.MaxAge, time.Minute)
	for _, c := range slices.Clone(wp.ready) {
		age := now.Sub(c.started)
		switch {
		case age >= wp.cfg.MaxAge+grace:
			wp.drop(c)
			s.retire(ctx, c, "max_age")
		case age >= wp.cfg.MaxAge:
			c.expired = true
		}
	}
}

func (s *supervisor) startTicker(ctx actor.Context) {
	s.stopTicker = make(chan struct{})
	self, root, every := ctx.Self(), ctx.ActorSystem().Root, s.pool.cfg.HousekeepingInterval
	go func(stop <-chan struct{}) {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				root.Send(self, tick{})
			case <-stop:
				return
			}
		}
	}(s.stopTicker)
}

// --- configuration ---

// configure installs limits: pools keep their state when they stay, new
// ones start empty, dropped ones are marked removed. auto_warm pools stay
// (at the new auto_warm size) unless the config now names them or
// auto_warm is 0.
func (s *supervisor) configure(l Limits) {
	s.limits = l
	wanted := map[string]PoolConfig{}
	for _, pc := range l.Pools {
		wanted[pc.Snapshot] = pc
	}
	for name, wp := range s.pools {
		if _, configured := wanted[name]; configured {
			wp.auto = false
		} else if wp.auto && l.AutoWarm > 0 {
			wanted[name] = PoolConfig{Snapshot: name, Warm: l.AutoWarm}
		}
	}
	for name, wp := range s.pools {
		if pc, ok := wanted[name]; ok {
			wp.cfg = pc
			continue
		}
		wp.removed = true
		delete(s.pools, name)
	}
	for name, pc := range wanted {
		if _, ok := s.pools[name]; !ok {
			s.pools[name] = newWarmPool(pc, s.pool.cfg.Backoff)
		}
	}
}

// trim retires ready sandboxes beyond each pool's target (and all of a
// removed pool's, which are no longer in s.pools but still in children).
func (s *supervisor) trim(ctx actor.Context) {
	for _, c := range s.children {
		if c.state != childReady {
			continue
		}
		wp := c.pool
		if wp.removed {
			wp.drop(c)
			s.retire(ctx, c, "pool removed")
		}
	}
	for _, wp := range s.pools {
		for len(wp.ready) > wp.cfg.Warm {
			c := wp.ready[0]
			wp.drop(c)
			s.retire(ctx, c, "pool shrunk")
		}
	}
}

// --- shutdown ---

func (s *supervisor) onShutdown(ctx actor.Context, msg shutdownRequest) {
	if !s.stopping {
		s.stopping = true
		close(s.stopTicker)
		if s.wakeTimer != nil {
			s.wakeTimer.Stop()
		}
		for _, req := range s.queue {
			s.refuse(req, ErrShuttingDown)
		}
		s.queue = nil
		for id, reqs := range s.exitWaiters {
			for _, req := range reqs {
				s.refuse(req, ErrShuttingDown)
			}
			delete(s.exitWaiters, id)
		}
		for _, c := range s.children {
			ctx.Send(c.pid, actors.Shutdown{})
		}
	}
	s.waiters = append(s.waiters, msg.done)
	s.maybeDone()
}

func (s *supervisor) maybeDone() {
	if !s.stopping || len(s.children) > 0 {
		return
	}
	for _, w := range s.waiters {
		close(w)
	}
	s.waiters = nil
}
