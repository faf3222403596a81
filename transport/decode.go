package transport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/sandpool/sandpool/actors"
)

// protocolError is a bad client message: the client gets status + message
// (and the `error` event) and the connection stays open.
type protocolError struct {
	status  string
	message string
}

func (e *protocolError) Error() string { return e.message }

func badMessage(status, format string, args ...any) *protocolError {
	return &protocolError{status: status, message: fmt.Sprintf(format, args...)}
}

// initMessage is the decoded first frame on /create.
type initMessage struct {
	IdleTimeout              time.Duration
	EnableCheckpoint         bool
	EnableHandoff            bool
	EnableIdleAutoCheckpoint bool
	SnapshotName             string
}

// decodeInit parses the init message; absent keys take their defaults and
// unknown keys are ignored (protocol.md §2).
func decodeInit(frame []byte, defaultIdle time.Duration) (initMessage, error) {
	fields, err := decodeObject(frame)
	if err != nil {
		return initMessage{}, fmt.Errorf("Invalid init message: %s", err.message)
	}
	init := initMessage{IdleTimeout: defaultIdle}
	if raw, ok := fields["idle_timeout"]; ok {
		if isNull(raw) {
			init.IdleTimeout = 0
		} else {
			var secs float64
			if json.Unmarshal(raw, &secs) != nil || secs < 0 || math.IsInf(secs, 0) || secs > 365*24*3600 {
				return initMessage{}, fmt.Errorf("Invalid init message: 'idle_timeout' must be a non-negative number of seconds or null.")
			}
			init.IdleTimeout = time.Duration(secs * float64(time.Second))
		}
	}
	for key, dst := range map[string]*bool{
		"enable_checkpoint":                   &init.EnableCheckpoint,
		"enable_sandbox_handoff":              &init.EnableHandoff,
		"enable_idle_timeout_auto_checkpoint": &init.EnableIdleAutoCheckpoint,
	} {
		if raw, ok := fields[key]; ok && !isNull(raw) {
			if json.Unmarshal(raw, dst) != nil {
				return initMessage{}, fmt.Errorf("Invalid init message: '%s' must be a boolean.", key)
			}
		}
	}
	switch {
	case init.EnableHandoff && !init.EnableCheckpoint:
		return initMessage{}, fmt.Errorf("Invalid init message: 'enable_sandbox_handoff' requires 'enable_checkpoint'.")
	case init.EnableIdleAutoCheckpoint && !init.EnableCheckpoint:
		return initMessage{}, fmt.Errorf("Invalid init message: 'enable_idle_timeout_auto_checkpoint' requires 'enable_checkpoint'.")
	}
	if raw, ok := fields["filesystem_snapshot_name"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &init.SnapshotName) != nil {
			return initMessage{}, fmt.Errorf("Invalid init message: 'filesystem_snapshot_name' must be a string.")
		}
	}
	return init, nil
}

// decodeMessage turns a client frame into an actor message or a transport
// request (protocol.md §3). Anything that is no known action or stdin is an
// execute request.
func decodeMessage(frame []byte) (any, *protocolError) {
	fields, perr := decodeObject(frame)
	if perr != nil {
		return nil, perr
	}
	if raw, ok := fields["action"]; ok {
		var action string
		if json.Unmarshal(raw, &action) != nil {
			return nil, badMessage(actors.StatusExecError, "Invalid message: 'action' must be a string.")
		}
		switch action {
		case "kill_process":
			return actors.KillProcess{}, nil
		case "kill_sandbox":
			return actors.KillSandbox{}, nil
		case "close_stdin":
			return actors.CloseStdin{}, nil
		case "reconnect":
			return actors.Reconnect{}, nil
		case "checkpoint":
			return actors.Checkpoint{}, nil
		case "snapshot_filesystem":
			raw, ok := fields["name"]
			if !ok || isNull(raw) {
				return nil, badMessage(actors.StatusSnapshotError, "Invalid snapshot request: 'name' is required.")
			}
			var name string
			if json.Unmarshal(raw, &name) != nil {
				return nil, badMessage(actors.StatusSnapshotError, "Invalid snapshot request: 'name' must be a string.")
			}
			// The actor checks the name itself: disabled snapshots are
			// reported first.
			return actors.SnapshotFilesystem{Name: name}, nil
		default:
			return nil, badMessage(actors.StatusExecError, "Unknown action: '%s'.", truncate(action, 64))
		}
	}
	if raw, ok := fields["event"]; ok && bytes.Equal(bytes.TrimSpace(raw), []byte(`"stdin"`)) {
		var data string
		if d, ok := fields["data"]; !ok || json.Unmarshal(d, &data) != nil {
			return nil, badMessage(actors.StatusStdinError, "Invalid stdin message: 'data' must be a string.")
		}
		return actors.Stdin{Data: data}, nil
	}
	return decodeExecute(fields)
}

func decodeExecute(fields map[string]json.RawMessage) (any, *protocolError) {
	var ex actors.Execute
	if raw, ok := fields["language"]; ok {
		if json.Unmarshal(raw, &ex.Language) != nil || isNull(raw) {
			// Reported by the actor as an unsupported language, quoting
			// what was sent.
			ex.Language = truncate(string(bytes.TrimSpace(raw)), 64)
		}
	}
	if raw, ok := fields["code"]; ok {
		if json.Unmarshal(raw, &ex.Code) != nil || isNull(raw) {
			return nil, badMessage(actors.StatusExecError, "Invalid execute request: 'code' must be a string.")
		}
		ex.HasCode = true
	}
	if raw, ok := fields["env"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &ex.Env) != nil {
			return nil, badMessage(actors.StatusExecError, "Invalid execute request: 'env' must be an object of strings.")
		}
		for k := range ex.Env {
			if k == "" || bytes.ContainsAny([]byte(k), "=\x00") {
				return nil, badMessage(actors.StatusExecError, "Invalid execute request: bad environment variable name %q.", truncate(k, 64))
			}
		}
	}
	if raw, ok := fields["cwd"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &ex.Cwd) != nil || (ex.Cwd != "" && ex.Cwd[0] != '/') {
			return nil, badMessage(actors.StatusExecError, "Invalid execute request: 'cwd' must be an absolute path.")
		}
	}
	if raw, ok := fields["timeout"]; ok && !isNull(raw) {
		var secs float64
		if json.Unmarshal(raw, &secs) != nil || secs <= 0 || secs > 7*24*3600 {
			return nil, badMessage(actors.StatusExecError, "Invalid execute request: 'timeout' must be a positive number of seconds.")
		}
		ex.Timeout = time.Duration(secs * float64(time.Second))
	}
	return ex, nil
}

// decodeObject parses a frame that must be one JSON object.
func decodeObject(frame []byte) (map[string]json.RawMessage, *protocolError) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(frame, &fields); err != nil || fields == nil {
		if json.Valid(frame) {
			return nil, badMessage(actors.StatusExecError, "Invalid message: expected a JSON object.")
		}
		return nil, badMessage(actors.StatusExecError, "Invalid message: not valid JSON.")
	}
	return fields, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
