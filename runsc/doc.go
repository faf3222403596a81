// Package runsc drives the gVisor runsc binary: it builds OCI specs, runs the
// CLI with deadlines and process groups, probes the binary's features, and
// offers a Fake runtime for unit tests.
//
// Concurrency: a Runner and a Fake are safe for concurrent use by many
// sandboxes; a Process is owned by one caller, but Kill may be called from any
// goroutine while another waits.
package runsc
