package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/cmd/sandpool/load"
)

// Port 1 on loopback refuses at once: every cycle fails to dial.
const refusingURL = "ws://127.0.0.1:1"

func TestLoadFailsWhenCyclesFailAfterReporting(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, stdout string)
	}{
		{"report", nil, func(t *testing.T, stdout string) {
			assert.Contains(t, stdout, "0 cycles ok, 3 failed")
			assert.Contains(t, stdout, "dial (create)")
			// No sample is not a 0 ms latency.
			assert.Regexp(t, `(?m)^first_output\s+0\s+-\s+-\s+-\s+-$`, stdout)
		}},
		{"json", []string{"--json"}, func(t *testing.T, stdout string) {
			var res struct {
				Failed int            `json:"failed"`
				Errors map[string]int `json:"errors"`
			}
			require.NoError(t, json.Unmarshal([]byte(stdout), &res))
			assert.Equal(t, 3, res.Failed)
			assert.Equal(t, map[string]int{"dial (create)": 3}, res.Errors)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--url", refusingURL, "--sandboxes", "3", "--concurrency", "1"}, tt.args...)
			err := loadCommand(args, &stdout, &stderr)
			require.EqualError(t, err, "load: 3 of 3 cycles failed")
			tt.check(t, stdout.String())
		})
	}
}

func TestLoadRefusesARemoteTarget(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := loadCommand([]string{"--url", "ws://192.0.2.1:8080", "--sandboxes", "1"}, &stdout, &stderr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--allow-remote")
	assert.Empty(t, stdout.String(), "nothing was sent, nothing to report")
}

func TestLoadReportSaysItWasInterrupted(t *testing.T) {
	var out bytes.Buffer
	writeReport(&out, load.Result{Mode: "sandpool", Completed: 3, Interrupted: true, Latency: map[string]load.Stats{}})
	assert.Contains(t, out.String(), "interrupted: stopped by a signal")
}
