package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sandpool/sandpool/actors"
)

// handleExecute is POST /execute?language=python|bash: a fresh sandbox runs
// the body and is deleted afterwards, whatever happens; stdout and stderr
// stream back in arrival order.
func (s *Server) handleExecute(w http.ResponseWriter, r *http.Request) {
	language := r.URL.Query().Get("language")
	if language == "" {
		language = "python"
	}
	if !actors.SupportedLanguage(language) {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": actors.UnsupportedLanguageMessage(truncate(language, 64))})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxExecuteBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("Code is larger than %d bytes.", s.cfg.MaxExecuteBody)})
			return
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Could not read the request body."})
		return
	}

	sink := newEventQueue(outboundEvents, nil)
	defer sink.close()
	ref, err := s.cfg.Pool.Create(r.Context(), actors.Settings{IdleTimeout: 0}, sink)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": creationMessage(err, "")})
		return
	}
	log := s.log.With().Str("sandbox_id", ref.ID).Logger()
	// Deleted on every path: done, client gone, or write failure.
	defer ref.Send(actors.KillSandbox{})

	ref.Send(actors.Execute{Language: language, Code: string(body), HasCode: true})
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if err := streamOutput(r.Context(), w, flusher, sink); err != nil {
		log.Debug().Err(err).Msg("execute request ended early")
	}
}

// streamOutput copies the execution's output to w until DONE.
func streamOutput(ctx context.Context, w io.Writer, flusher http.Flusher, events *eventQueue) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-events.ready:
			batch := events.take()
			for i, ev := range batch {
				done, err := writeOutput(w, ev)
				ev.Release()
				if err != nil || done {
					releaseAll(batch[i+1:])
					return err
				}
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

// writeOutput writes an output event; it reports whether the execution
// ended. Errors of the sandbox itself become a line of text, since the
// status code was already sent.
func writeOutput(w io.Writer, ev actors.Event) (bool, error) {
	switch {
	case ev.Kind == actors.EventStdout || ev.Kind == actors.EventStderr:
		_, err := io.WriteString(w, ev.Data)
		return false, err
	case ev.Kind == actors.EventStatus && ev.Status == actors.StatusExecDone:
		return true, nil
	case ev.Kind == actors.EventStatus && strings.HasSuffix(ev.Status, "_ERROR"):
		_, err := fmt.Fprintf(w, "\n[sandpool] %s: %s\n", ev.Status, ev.Message)
		return ev.Status == actors.StatusExecError, err
	case ev.Gone:
		return true, nil
	}
	return false, nil
}
