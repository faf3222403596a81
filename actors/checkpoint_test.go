package actors

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/pool/checkpoints"
	"github.com/sandpool/sandpool/runsc"
)

func newCheckpointStore(t *testing.T) *checkpoints.Store {
	t.Helper()
	store, err := checkpoints.New(checkpoints.Config{Dir: t.TempDir(), RunscVersion: "test"})
	require.NoError(t, err)
	return store
}

// withCheckpoints gives the sandbox a checkpoint store.
func withCheckpoints(store *checkpoints.Store) func(*Config) {
	return func(c *Config) { c.Checkpoints = store }
}

// restoreFrom spawns the actor that restores meta, attached to sink.
func restoreFrom(t *testing.T, rt *runsc.Fake, store *checkpoints.Store, meta checkpoints.Meta, sink Sink) (*Ref, error) {
	t.Helper()
	system := actor.NewActorSystem()
	created := make(chan error, 1)
	sb := New(Config{ID: meta.ID, TokenHash: meta.TokenHash, Runtime: rt, Checkpoints: store, Restore: &meta,
		Sink: sink, Created: created, Logger: zerolog.Nop()})
	pid := system.Root.Spawn(sb.Props())
	t.Cleanup(func() { _ = system.Root.StopFuture(pid).Wait() })
	ref := &Ref{ID: meta.ID, PID: pid, Root: system.Root}
	select {
	case err := <-created:
		return ref, err
	case <-time.After(5 * time.Second):
		t.Fatal("restore never finished")
		return nil, nil
	}
}

func TestCheckpointRefusals(t *testing.T) {
	store := newCheckpointStore(t)
	tests := []struct {
		name     string
		settings Settings
		store    *checkpoints.Store
		running  bool
		want     []string
		message  string
		closes   bool
	}{
		{"server without checkpoints", Settings{EnableCheckpoint: true}, nil, false,
			[]string{StatusCheckpointError}, "Checkpointing is not enabled on the server.", true},
		{"sandbox without enable_checkpoint", Settings{}, store, false,
			[]string{StatusCheckpointError}, checkpointNotEnabledMessage, true},
		{"execution in progress", Settings{EnableCheckpoint: true}, store, true,
			[]string{StatusCheckpointing, StatusExecInProgress}, "Cannot checkpoint while an execution is in progress.", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := runsc.NewFake()
			h, err := start(t, rt, tt.settings, withCheckpoints(tt.store))
			require.NoError(t, err)
			if tt.running {
				h.ref.Send(Execute{Language: "bash", Code: "sleep", HasCode: true})
				h.sink.until(t, StatusExecRunning)
			}
			h.ref.Send(Checkpoint{})
			var statuses []string
			for range tt.want {
				ev := h.sink.next(t)
				statuses = append(statuses, ev.Status)
				if ev.Message != "" {
					assert.Equal(t, tt.message, ev.Message)
				}
			}
			assert.Equal(t, tt.want, statuses)
			errEv := h.sink.next(t)
			assert.Equal(t, EventError, errEv.Kind)
			if tt.closes {
				assert.Equal(t, CloseError, errEv.CloseCode)
			} else {
				assert.Zero(t, errEv.CloseCode, "the connection stays open")
			}
			assert.NotContains(t, rt.Calls(), "checkpoint "+h.ref.ID, "nothing was touched")
			if tt.running {
				h.ref.Send(KillProcess{})
				h.sink.until(t, StatusExecDone)
			}
			h.ref.Send(Execute{Language: "bash", Code: "alive", HasCode: true})
			_, stdout, _, _ := h.sink.until(t, StatusExecDone)
			assert.Equal(t, "alive", stdout)
		})
	}
}

func TestCheckpointThenRestore(t *testing.T) {
	rt := runsc.NewFake()
	store := newCheckpointStore(t)
	h, err := start(t, rt, Settings{EnableCheckpoint: true, IdleTimeout: 42 * time.Second}, withCheckpoints(store))
	require.NoError(t, err)
	h.ref.Send(Checkpoint{})
	statuses, _, _, last := h.sink.until(t, StatusCheckpointed)
	assert.Equal(t, []string{StatusCheckpointing, StatusDeleting, StatusDeleted, StatusCheckpointed}, statuses)
	gone := h.sink.next(t)
	assert.True(t, gone.Gone)
	assert.Equal(t, CloseNormal, gone.CloseCode)
	assert.Zero(t, last.CloseCode)
	require.Eventually(t, func() bool { return len(rt.Live()) == 0 }, 5*time.Second, 10*time.Millisecond, "the container is deleted")

	meta, err := store.Load(h.ref.ID)
	require.NoError(t, err)
	assert.True(t, meta.TokenMatches(h.ref.Token))
	assert.NotContains(t, string(mustReadDir(t, store.Dir())), h.ref.Token, "only the token's hash is stored")
	assert.Equal(t, 42.0, meta.IdleTimeout)

	client := newRecorder()
	ref, err := restoreFrom(t, rt, store, meta, client)
	require.NoError(t, err)
	assert.Equal(t, StatusRunning, client.next(t).Status)
	assert.Contains(t, rt.Calls(), "restore "+h.ref.ID)
	ref.Send(Execute{Language: "bash", Code: "restored", HasCode: true})
	_, stdout, _, _ := client.until(t, StatusExecDone)
	assert.Equal(t, "restored", stdout)

	// The same token still opens it.
	attachTo(t, ref, nil, "", nil)
	detachRef(t, ref, client)
	second := newRecorder()
	assert.ErrorIs(t, attachTo(t, ref, second, "wrong", nil).Err, ErrInvalidToken)
	require.NoError(t, attachTo(t, ref, second, h.ref.Token, nil).Err)

	// A kill removes the checkpoint with the sandbox.
	ref.Send(KillSandbox{})
	second.until(t, StatusKilled)
	_, err = store.Load(h.ref.ID)
	assert.ErrorIs(t, err, checkpoints.ErrNotFound)
	assert.Empty(t, rt.Live())
}

func detachRef(t *testing.T, ref *Ref, sink Sink) {
	t.Helper()
	done := make(chan struct{})
	ref.Send(Detach{Sink: sink, Done: done})
	<-done
}

// mustReadDir concatenates every file under dir.
func mustReadDir(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	require.NoError(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		all = append(all, data...)
		return err
	}))
	return all
}

func TestRestoreOfACorruptImageLeavesTheMetadata(t *testing.T) {
	rt := runsc.NewFake()
	store := newCheckpointStore(t)
	h, err := start(t, rt, Settings{EnableCheckpoint: true}, withCheckpoints(store))
	require.NoError(t, err)
	h.ref.Send(Checkpoint{})
	h.sink.until(t, StatusCheckpointed)
	meta, err := store.Load(h.ref.ID)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(store.ImageDir(meta), runsc.FakeImageFile), []byte("garbage"), 0o600))

	_, err = restoreFrom(t, rt, store, meta, newRecorder())
	assert.ErrorIs(t, err, checkpoints.ErrCorrupt, "the image's checksum catches what runsc would not")
	assert.NotContains(t, rt.Calls(), "restore "+h.ref.ID)
	_, err = store.Load(h.ref.ID)
	assert.NoError(t, err, "an operator can inspect what failed")
	assert.Empty(t, rt.Live())
}

func TestFailedCheckpointKeepsTheSandboxRunning(t *testing.T) {
	rt := runsc.NewFake()
	rt.CheckpointErr = os.ErrPermission
	store := newCheckpointStore(t)
	h, err := start(t, rt, Settings{EnableCheckpoint: true}, withCheckpoints(store))
	require.NoError(t, err)
	h.ref.Send(Checkpoint{})
	statuses, _, _, _ := h.sink.until(t, StatusCheckpointError)
	assert.Equal(t, []string{StatusCheckpointing, StatusCheckpointError}, statuses)
	assert.Equal(t, CloseError, h.sink.next(t).CloseCode)
	_, err = store.Load(h.ref.ID)
	assert.ErrorIs(t, err, checkpoints.ErrNotFound, "nothing half-written stays")

	h.ref.Send(Execute{Language: "bash", Code: "still here", HasCode: true})
	_, stdout, _, _ := h.sink.until(t, StatusExecDone)
	assert.Equal(t, "still here", stdout)
}

func TestHandOffKillsTheExecutionThenCheckpoints(t *testing.T) {
	rt := runsc.NewFake()
	store := newCheckpointStore(t)
	h, err := start(t, rt, Settings{EnableCheckpoint: true, EnableHandoff: true}, withCheckpoints(store))
	require.NoError(t, err)
	res := h.attach(t, newRecorder(), h.ref.Token, nil)
	require.ErrorIs(t, res.Err, ErrInUse)
	assert.True(t, res.Handoff)

	h.ref.Send(Execute{Language: "bash", Code: "sleep", HasCode: true})
	h.sink.until(t, StatusExecRunning)
	reply := make(chan error, 1)
	h.ref.Send(HandOff{Reply: reply})
	statuses, _, _, _ := h.sink.until(t, StatusCheckpointed)
	assert.Equal(t, []string{StatusLockReleaseReq, StatusCheckpointing, StatusForceKilled, StatusExecDone, StatusCheckpointed}, statuses)
	assert.Equal(t, CloseNormal, h.sink.next(t).CloseCode)
	select {
	case err := <-reply:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the handoff never answered")
	}
	_, err = store.Load(h.ref.ID)
	assert.NoError(t, err)
}

func TestHandOffRefusedWithoutEnableSandboxHandoff(t *testing.T) {
	h, err := start(t, runsc.NewFake(), Settings{EnableCheckpoint: true}, withCheckpoints(newCheckpointStore(t)))
	require.NoError(t, err)
	reply := make(chan error, 1)
	h.ref.Send(HandOff{Reply: reply})
	assert.ErrorIs(t, <-reply, ErrInUse)
	h.sink.quiet(t)
}

func TestIdleExpiryCheckpointsWhenAsked(t *testing.T) {
	rt := runsc.NewFake()
	store := newCheckpointStore(t)
	h, err := start(t, rt, Settings{EnableCheckpoint: true, IdleAutoCheckpoint: true, IdleTimeout: 50 * time.Millisecond}, withCheckpoints(store))
	require.NoError(t, err)
	statuses, _, _, _ := h.sink.until(t, StatusCheckpointed)
	assert.Equal(t, []string{StatusCheckpointing, StatusDeleting, StatusDeleted, StatusCheckpointed}, statuses)
	_, err = store.Load(h.ref.ID)
	assert.NoError(t, err)
}
