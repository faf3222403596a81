package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// httpClient bounds every request: /execute starts a sandbox per call.
var httpClient = &http.Client{Timeout: 60 * time.Second}

func TestHTTPInfoEndpoints(t *testing.T) {
	s := startServer(t)

	tests := []struct {
		path     string
		wantJSON map[string]any // nil: only the status code is contractual
	}{
		{"/status", map[string]any{"status": "ok"}},
		{"/", map[string]any{"message": "Server is running"}},
		{"/healthz", nil},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := httpClient.Get(s.httpURL(tc.path))
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			assert.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
			if tc.wantJSON != nil {
				var got map[string]any
				require.NoError(t, json.Unmarshal(body, &got), "body: %s", body)
				assert.Equal(t, tc.wantJSON, got)
			}
		})
	}
}

func TestHTTPExecute(t *testing.T) {
	s := startServer(t)

	tests := []struct {
		name     string
		query    string
		code     string
		wantCode int
		wantBody string // checked only for 200
	}{
		{"bash", "?language=bash", "echo hi", http.StatusOK, "hi\n"},
		{"python", "?language=python", "print('hi from python')", http.StatusOK, "hi from python\n"},
		{"python is the default", "", "print(6 * 7)", http.StatusOK, "42\n"},
		// stderr is part of the stream; the pause fixes the arrival order.
		{"stdout and stderr", "?language=bash", "echo out; sleep 0.2; echo err >&2", http.StatusOK, "out\nerr\n"},
		{"unsupported language", "?language=ruby", "puts 1", http.StatusUnprocessableEntity, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := httpClient.Post(s.httpURL("/execute"+tc.query), "text/plain", strings.NewReader(tc.code))
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			require.Equal(t, tc.wantCode, resp.StatusCode, "body: %s", body)
			if tc.wantCode == http.StatusOK {
				assert.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"),
					"Content-Type %q", resp.Header.Get("Content-Type"))
				assert.Equal(t, tc.wantBody, string(body))
			}
		})
	}

	// Each request's sandbox is deleted afterwards.
	assertNoContainers(t, s, 10*time.Second)
}
