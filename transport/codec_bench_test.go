package transport

import (
	"strings"
	"testing"
	"time"

	"github.com/sandpool/sandpool/actors"
)

// The protocol's hot paths: every client frame is decoded, every event
// encoded, once per message.

func BenchmarkDecodeExecute(b *testing.B) {
	frame := []byte(`{"language":"python","code":"import sys\nprint(sum(range(10)))","timeout":30,"env":{"A":"b"},"cwd":"/tmp"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, perr := decodeMessage(frame); perr != nil {
			b.Fatal(perr)
		}
	}
}

func BenchmarkDecodeStdin(b *testing.B) {
	frame := []byte(`{"event":"stdin","data":"` + strings.Repeat("x", 1024) + `"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, perr := decodeMessage(frame); perr != nil {
			b.Fatal(perr)
		}
	}
}

func BenchmarkDecodeInit(b *testing.B) {
	frame := []byte(`{"idle_timeout":60,"enable_checkpoint":false,"enable_sandbox_handoff":false,"enable_idle_timeout_auto_checkpoint":false,"filesystem_snapshot_name":"py-base"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeInit(frame, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeOutput(b *testing.B) {
	ev := actors.Event{Kind: actors.EventStdout, Data: strings.Repeat("line of output\n", 64)} // ~1 KiB
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Data)))
	for b.Loop() {
		if _, err := encodeEvent(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeStatus(b *testing.B) {
	code := 0
	ev := actors.Event{Kind: actors.EventStatus, Status: actors.StatusExecDone, ExitCode: &code}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeEvent(ev); err != nil {
			b.Fatal(err)
		}
	}
}
