package transport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/actors"
	"github.com/sandpool/sandpool/pool"
	"github.com/sandpool/sandpool/pool/snapshots"
)

// Creator creates sandboxes; *pool.Pool is the real one.
type Creator interface {
	Create(ctx context.Context, settings actors.Settings, sink actors.Sink) (*actors.Ref, error)
	Attach(ctx context.Context, req pool.AttachRequest) (*actors.Ref, error)
	Live() int
	Status(ctx context.Context) (pool.Status, error)
}

// Config configures the transport.
type Config struct {
	Pool   Creator
	Logger zerolog.Logger
	// DefaultIdleTimeout applies when the init message has no idle_timeout.
	DefaultIdleTimeout time.Duration
	// MaxMessageBytes is the largest client frame that is read; a larger
	// one is discarded unread and answered with an error (default 8 MiB).
	MaxMessageBytes int64
	// PingInterval is how often the server pings (default 10 s); a
	// connection silent for PingInterval+PongWait (default 20 s) is dead,
	// which frees its sandbox for an attach: within 30 s, and a live
	// client has three pings to answer.
	PingInterval time.Duration
	PongWait     time.Duration
	// RestoreTimeout bounds an attach that restores a checkpoint
	// (default 5 min).
	RestoreTimeout time.Duration
	// InitTimeout bounds the wait for the init message (default 30 s).
	InitTimeout time.Duration
	// MaxExecuteBody bounds POST /execute bodies (default 1 MiB).
	MaxExecuteBody int64
	// Metrics serves GET /metrics (Prometheus text format); nil serves
	// none.
	Metrics http.Handler
}

// Server serves the protocol over HTTP and WebSocket.
type Server struct {
	cfg      Config
	log      zerolog.Logger
	upgrader websocket.Upgrader
	mux      *http.ServeMux
}

// New builds the handlers.
func New(cfg Config) (*Server, error) {
	if cfg.Pool == nil {
		return nil, errors.New("transport: a pool is required")
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 8 << 20
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 10 * time.Second
	}
	if cfg.PongWait <= 0 {
		cfg.PongWait = 20 * time.Second
	}
	if cfg.RestoreTimeout <= 0 {
		cfg.RestoreTimeout = 5 * time.Minute
	}
	if cfg.InitTimeout <= 0 {
		cfg.InitTimeout = 30 * time.Second
	}
	if cfg.MaxExecuteBody <= 0 {
		cfg.MaxExecuteBody = 1 << 20
	}
	s := &Server{
		cfg: cfg,
		log: cfg.Logger,
		upgrader: websocket.Upgrader{
			ReadBufferSize:  32 << 10,
			WriteBufferSize: 32 << 10,
			// Clients are programs, not pages; the token guards attach.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		mux: http.NewServeMux(),
	}
	s.mux.HandleFunc("GET /create", s.handleCreate)
	s.mux.HandleFunc("GET /attach/{id}", s.handleAttach)
	s.mux.HandleFunc("GET /status", s.handleStatus)
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("POST /execute", s.handleExecute)
	s.mux.HandleFunc("GET /pools", s.handlePools)
	if cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", cfg.Metrics)
	}
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"message": "Server is running"})
	})
	return s, nil
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "sandboxes": s.cfg.Pool.Live()})
}

// handlePools reports every warm pool (pool.Status as JSON).
func (s *Server) handlePools(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st, err := s.cfg.Pool.Status(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// handleCreate runs one /create connection: init, creation, then the
// client's messages until either side ends it.
func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered with an HTTP error
	}
	c := s.newConn(ws)
	defer c.shutdown()

	frame, ok := c.nextFrame(s.cfg.InitTimeout)
	if !ok {
		return // dropped before saying anything: nothing was created
	}
	if frame.err != nil {
		c.fail(actors.StatusCreationError, frame.err.message, actors.CloseError)
		return
	}
	init, err := decodeInit(frame.data, s.cfg.DefaultIdleTimeout)
	if err != nil {
		c.fail(actors.StatusCreationError, err.Error(), actors.CloseError)
		return
	}

	c.queue.Send(actors.Event{Kind: actors.EventStatus, Status: actors.StatusCreating})

	// Creation is cancelled (and the sandbox killed) if the client leaves.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-c.readerDone:
			cancel()
		case <-ctx.Done():
		}
	}()
	settings := actors.Settings{
		IdleTimeout:        init.IdleTimeout,
		Snapshot:           init.SnapshotName,
		EnableCheckpoint:   init.EnableCheckpoint,
		EnableHandoff:      init.EnableHandoff,
		IdleAutoCheckpoint: init.EnableIdleAutoCheckpoint,
	}
	ref, err := s.cfg.Pool.Create(ctx, settings, c)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Str("snapshot", init.SnapshotName).Msg("create failed")
		}
		c.fail(actors.StatusCreationError, creationMessage(err, init.SnapshotName), actors.CloseError)
		return
	}
	c.ref = ref
	c.log = s.log.With().Str("sandbox_id", ref.ID).Logger()
	c.queue.Send(actors.Event{Kind: actors.EventSandboxID, SandboxID: ref.ID, Token: ref.Token})
	source := "miss"
	if ref.Warm {
		source = "hit"
	}
	c.queue.Send(actors.Event{Kind: actors.EventStatus, Status: actors.StatusRunning, Pool: source})
	c.log.Info().Dur("idle_timeout", init.IdleTimeout).Str("snapshot", init.SnapshotName).Str("pool", source).Msg("sandbox created")
	c.serve()
}

// creationMessage is the client's text for a failed create; the snapshot
// texts are the ones protocol clients match.
func creationMessage(err error, snapshot string) string {
	var corrupt *snapshots.CorruptError
	switch {
	case errors.Is(err, pool.ErrNoCapacity):
		// err reads "sandbox capacity reached: the server runs ...".
		return sentence(err)
	case errors.Is(err, pool.ErrShuttingDown):
		return "The server is shutting down."
	case errors.Is(err, pool.ErrCheckpointsDisabled):
		return actors.CheckpointsDisabledMessage
	case errors.Is(err, pool.ErrSnapshotsDisabled):
		return actors.SnapshotsDisabledMessage
	case errors.Is(err, snapshots.ErrInvalidName):
		return "Filesystem snapshot not found: " + truncate(snapshot, 128) + " (" + err.Error() + ")"
	case errors.Is(err, snapshots.ErrNotFound):
		return "Filesystem snapshot not found: " + snapshot
	case errors.As(err, &corrupt):
		return "Filesystem snapshot is corrupt: " + corrupt.Name + ": " + corrupt.Reason
	default:
		return "Failed to create the sandbox: " + err.Error()
	}
}

// handleAttach re-attaches a client to its sandbox (protocol.md
// "Attach"): the token is checked before anything is bound or restored, a
// checkpointed sandbox is restored (SANDBOX_RESTORING first), and the
// sandbox itself sends SANDBOX_RUNNING once the client is attached.
func (s *Server) handleAttach(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.URL.Query()["sandbox_token"]; !ok {
		http.Error(w, "sandbox_token is required", http.StatusForbidden)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := s.newConn(ws)
	defer c.shutdown()
	id, token := r.PathValue("id"), r.URL.Query().Get("sandbox_token")
	if token == "" {
		c.fail(actors.StatusPermissionDenial, "Sandbox token is missing.", actors.CloseError)
		return
	}
	// A restore goes on if the client leaves: the sandbox then waits,
	// detached, for the next attach.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RestoreTimeout)
	defer cancel()
	ref, err := s.cfg.Pool.Attach(ctx, pool.AttachRequest{
		ID: id, Token: token, Sink: c,
		Restoring: func() { c.queue.Send(actors.Event{Kind: actors.EventStatus, Status: actors.StatusRestoring}) },
	})
	if err != nil {
		status, msg, code := attachFailure(err, id)
		s.log.Info().Err(err).Str("sandbox_id", truncate(id, 64)).Msg("attach refused")
		c.fail(status, msg, code)
		return
	}
	c.ref = ref
	c.log = s.log.With().Str("sandbox_id", ref.ID).Logger()
	c.serve()
}

// sentence is err's text with a capital first letter.
func sentence(err error) string {
	text := err.Error()
	return strings.ToUpper(text[:1]) + text[1:]
}

// attachFailure is the status, text and close code of a refused attach.
func attachFailure(err error, id string) (string, string, int) {
	shown := truncate(id, 64)
	switch {
	case errors.Is(err, pool.ErrNotFound):
		return actors.StatusNotFound, "Sandbox not found: " + shown, actors.CloseNotFound
	case errors.Is(err, pool.ErrInvalidToken):
		return actors.StatusPermissionDenial, "Invalid sandbox token.", actors.CloseError
	case errors.Is(err, pool.ErrInUse):
		return actors.StatusInUse, "Sandbox " + shown + " is in use by another connection.", actors.CloseNotFound
	case errors.Is(err, pool.ErrRestore):
		return actors.StatusRestoreError, "Failed to " + err.Error(), actors.CloseError
	case errors.Is(err, pool.ErrNoCapacity):
		return actors.StatusRestoreError, sentence(err), actors.CloseError
	case errors.Is(err, pool.ErrShuttingDown):
		return actors.StatusError, "The server is shutting down.", actors.CloseError
	default:
		return actors.StatusError, "Failed to attach: " + err.Error(), actors.CloseError
	}
}
