package actors

import (
	"crypto/rand"
	"encoding/hex"
)

// NewID returns a sandbox id: 16 random bytes in hex. Every id has the same
// width, so none is a prefix of another (runsc matches ids by prefix).
func NewID() string { return randomHex(16) }

// NewToken returns a sandbox token: 32 random bytes in hex.
func NewToken() string { return randomHex(32) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
