//go:build race

package tests

// raceEnabled: `go test -race` also builds the server under test with the
// race detector, so the end-to-end flows hunt data races in the real server.
const raceEnabled = true
