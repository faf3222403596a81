package actors

import (
	"strings"
	"sync"
	"unicode/utf8"
)

// utf8Decoder turns a byte stream into valid UTF-8 chunks: a character split
// across reads is held back until complete, and invalid bytes become U+FFFD.
type utf8Decoder struct{ pending []byte }

// decode returns the text of b that can be emitted now.
func (d *utf8Decoder) decode(b []byte) string {
	if len(d.pending) > 0 {
		b = append(d.pending, b...)
		d.pending = nil
	}
	// Hold back a trailing incomplete (but so far valid) sequence.
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		if b[i]&0xC0 == 0xC0 { // a leading byte
			if !utf8.FullRune(b[i:]) {
				d.pending = append([]byte(nil), b[i:]...)
				b = b[:i]
			}
			break
		}
		if b[i] < utf8.RuneSelf {
			break
		}
	}
	return toValid(b)
}

// flush returns whatever is still held back, as replacement characters.
func (d *utf8Decoder) flush() string {
	s := toValid(d.pending)
	d.pending = nil
	return s
}

// toValid replaces every invalid byte with U+FFFD.
func toValid(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[:size])
		}
		b = b[size:]
	}
	return sb.String()
}

// DefaultOutputWindow is the flow window of an execution's output.
const DefaultOutputWindow = 4 << 20

// eventCost is what every output chunk costs of the window on top of its
// bytes, so the window bounds the number of chunks in flight too: a program
// writing one byte at a time must not flood a slow client's queue.
const eventCost = 1 << 10

// MaxOutputEvents is the most output chunks in flight through a window of
// the given size: what a Sink's queue must hold besides status events.
func MaxOutputEvents(window int) int { return window/eventCost + 1 }

// window bounds the output of one execution that is read but not yet
// written to the client, in bytes plus eventCost per chunk. A full window stops the readers, the pipe fills,
// and the process blocks on write: back-pressure instead of unbounded memory.
type window struct {
	mu     sync.Mutex
	cond   *sync.Cond
	used   int
	limit  int
	closed bool
}

func newWindow(limit int) *window {
	w := &window{limit: limit}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// acquire waits for room for n bytes (one chunk always fits when the
// window is empty) and returns the credit to release once written.
func (w *window) acquire(n int) *credit {
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.closed && w.used > 0 && w.used+n > w.limit {
		w.cond.Wait()
	}
	if w.closed {
		return nil
	}
	w.used += n
	return &credit{w: w, n: n}
}

func (w *window) release(n int) {
	w.mu.Lock()
	w.used -= n
	w.mu.Unlock()
	w.cond.Broadcast()
}

// close wakes every waiter for good: nobody will write the output anymore.
func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

// credit is one chunk's share of a window, released exactly once.
type credit struct {
	w    *window
	n    int
	once sync.Once
}

func (c *credit) release() { c.once.Do(func() { c.w.release(c.n) }) }
