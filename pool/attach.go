package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool/checkpoints"
)

// Sentinel errors of Attach (and Create, for ErrCheckpointsDisabled).
var (
	// ErrNotFound means no sandbox (live or checkpointed) has that id.
	ErrNotFound = errors.New("sandbox not found")
	// ErrInvalidToken means the token is not the sandbox's.
	ErrInvalidToken = actors.ErrInvalidToken
	// ErrInUse means another live client holds the sandbox.
	ErrInUse = actors.ErrInUse
	// ErrCheckpointsDisabled means no checkpoint directory is configured.
	ErrCheckpointsDisabled = errors.New("checkpointing is not enabled on the server")
	// ErrRestore means a checkpointed sandbox could not be restored; the
	// error is a *RestoreError.
	ErrRestore = errors.New("restore failed")
)

// RestoreError is a failed restore; the checkpoint is left for an
// operator to inspect. It matches ErrRestore.
type RestoreError struct {
	ID  string
	Err error
}

func (e *RestoreError) Error() string {
	return fmt.Sprintf("restore sandbox %s: %v", e.ID, e.Err)
}

func (e *RestoreError) Is(target error) bool { return target == ErrRestore }
func (e *RestoreError) Unwrap() error        { return e.Err }

// AttachRequest is a client re-attaching to a sandbox.
type AttachRequest struct {
	ID    string
	Token string
	Sink  actors.Sink
	// Restoring, when set, is called before a checkpointed sandbox is
	// restored for this client (the transport sends SANDBOX_RESTORING).
	Restoring func()
}

// Timeouts of Attach.
const (
	// probeTimeout is how long an attached client has to answer a ping
	// before a valid attach replaces it as dead.
	probeTimeout = 2 * time.Second
	// actorAnswer bounds the wait for a sandbox actor's answer: an actor
	// that stopped meanwhile drops the request (protoactor does not
	// dead-letter mailbox leftovers), and the lookup is retried.
	actorAnswer = 5 * time.Second
	// attachTries bounds the lookups of one Attach.
	attachTries = 3
)

// Attach binds req.Sink to sandbox req.ID: a live sandbox whose client is
// gone (or dead) directly, a checkpointed one by restoring it, a live one
// that allows handoff by checkpointing it away from its client and
// restoring it. The token is checked before anything else is touched. On
// success the sandbox has sent SANDBOX_RUNNING to the sink.
func (p *Pool) Attach(ctx context.Context, req AttachRequest) (*actors.Ref, error) {
	if checkpoints.ValidID(req.ID) != nil {
		return nil, ErrNotFound
	}
	var replace actors.Sink
	for try := 0; try < attachTries; try++ {
		found, err := p.lookup(ctx, req.ID)
		if err != nil {
			return nil, err
		}
		if found.busy {
			return nil, ErrInUse
		}
		if found.ref == nil {
			return p.restore(ctx, req, false)
		}
		res, answer := p.askAttach(ctx, found.ref, actors.Attach{Sink: req.Sink, Token: req.Token, Replace: replace})
		switch answer {
		case actorGone:
			// It stopped before the supervisor learnt it (after a
			// checkpoint, for one): a restore waits for its exit, and finds
			// the checkpoint or answers NOT_FOUND.
			return p.restore(ctx, req, true)
		case actorSilent:
			continue // look again
		}
		switch {
		case res.Err == nil:
			return found.ref, nil
		case errors.Is(res.Err, actors.ErrNotAttachable):
			// Going away: after a checkpoint it can be restored.
			return p.restore(ctx, req, true)
		case !errors.Is(res.Err, actors.ErrInUse) || res.Current == nil:
			return nil, res.Err
		}
		if prober, ok := res.Current.(actors.Prober); ok && !prober.Probe(probeTimeout) {
			replace = res.Current // dead: the next try takes its place
			continue
		}
		if !res.Handoff {
			return nil, ErrInUse
		}
		done := make(chan error, 1)
		found.ref.Send(actors.HandOff{Reply: done})
		select {
		case err := <-done:
			if err != nil {
				return nil, fmt.Errorf("%w: handoff: %v", ErrInUse, err)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return p.restore(ctx, req, true)
	}
	return nil, ErrNotFound
}

// attachAnswer is how an actor met an Attach.
type attachAnswer int

const (
	actorAnswered attachAnswer = iota
	actorGone                  // stopped without answering
	actorSilent                // no answer within actorAnswer
)

// askAttach sends msg to the sandbox actor and waits for its answer, or
// for the actor to stop.
func (p *Pool) askAttach(ctx context.Context, ref *actors.Ref, msg actors.Attach) (actors.AttachResult, attachAnswer) {
	reply := make(chan actors.AttachResult, 1)
	msg.Reply = reply
	ref.Send(msg)
	t := time.NewTimer(actorAnswer)
	defer t.Stop()
	select {
	case res := <-reply:
		return res, actorAnswered
	case <-ref.Done:
		select {
		case res := <-reply: // answered, then stopped
			return res, actorAnswered
		default:
			return actors.AttachResult{}, actorGone
		}
	case <-t.C:
		return actors.AttachResult{}, actorSilent
	case <-ctx.Done():
		return actors.AttachResult{Err: ctx.Err()}, actorAnswered
	}
}

// lookupResult is what the supervisor knows of an id: a client's sandbox,
// or busy (being created or restored for someone), or nothing.
type lookupResult struct {
	ref  *actors.Ref
	busy bool
}

func (p *Pool) lookup(ctx context.Context, id string) (lookupResult, error) {
	if p.closed.Load() {
		return lookupResult{}, ErrShuttingDown
	}
	reply := make(chan lookupResult, 1)
	p.root.Send(p.pid, lookupRequest{id: id, reply: reply})
	select {
	case res := <-reply:
		return res, nil
	case <-p.stopped:
		return lookupResult{}, ErrShuttingDown
	case <-ctx.Done():
		return lookupResult{}, ctx.Err()
	}
}

// restore brings back a checkpointed sandbox for req. afterExit: the
// sandbox's actor is still ending (checkpointed for a handoff, or just
// now), so the restore waits for it to be gone.
func (p *Pool) restore(ctx context.Context, req AttachRequest, afterExit bool) (*actors.Ref, error) {
	store := p.cfg.Checkpoints
	if store == nil {
		return nil, ErrNotFound
	}
	meta, err := store.Load(req.ID)
	switch {
	case errors.Is(err, checkpoints.ErrNotFound), errors.Is(err, checkpoints.ErrInvalidID):
		return nil, ErrNotFound
	case err != nil && meta.TokenHash == "":
		// The token cannot be checked against unreadable metadata: the
		// client learns nothing more than that (the log has the cause).
		p.log.Warn().Err(err).Str("sandbox_id", req.ID).Msg("checkpoint metadata unreadable")
		return nil, &RestoreError{ID: req.ID, Err: errors.New("its checkpoint metadata is unreadable")}
	case !meta.TokenMatches(req.Token):
		return nil, ErrInvalidToken
	case err != nil:
		return nil, &RestoreError{ID: req.ID, Err: err}
	case meta.RunscVersion != "" && store.RunscVersion() != "" && meta.RunscVersion != store.RunscVersion():
		return nil, &RestoreError{ID: req.ID, Err: fmt.Errorf("the checkpoint was made by runsc %s, this server runs %s", meta.RunscVersion, store.RunscVersion())}
	}
	if req.Restoring != nil {
		req.Restoring()
	}
	start := time.Now()
	reply := make(chan createResult, 1)
	p.root.Send(p.pid, createRequest{
		ctx:       ctx,
		settings:  actors.SettingsOf(meta),
		sink:      req.Sink,
		restore:   &meta,
		afterExit: afterExit,
		reply:     reply,
	})
	var res createResult
	select {
	case res = <-reply:
	case <-p.stopped:
		return nil, ErrShuttingDown
	}
	if res.err == nil {
		res.err = <-res.created
	}
	p.log.Info().Str("sandbox_id", req.ID).Dur("took", time.Since(start)).Err(res.err).Msg("restore")
	switch {
	case res.err == nil:
		return res.ref, nil
	case errors.Is(res.err, ErrInUse), errors.Is(res.err, ErrNoCapacity), errors.Is(res.err, ErrShuttingDown):
		return nil, res.err
	default:
		return nil, &RestoreError{ID: req.ID, Err: res.err}
	}
}
