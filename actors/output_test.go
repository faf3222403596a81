package actors

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// decodeAll feeds chunks to a fresh decoder and returns what each call
// emitted, the flush last.
func decodeAll(chunks ...[]byte) []string {
	var d utf8Decoder
	out := make([]string, 0, len(chunks)+1)
	for _, c := range chunks {
		out = append(out, d.decode(c))
	}
	return append(out, d.flush())
}

func TestUTF8Decoder(t *testing.T) {
	euro := []byte("€")  // 3 bytes: e2 82 ac
	emoji := []byte("😀") // 4 bytes: f0 9f 98 80
	for _, tc := range []struct {
		name   string
		chunks [][]byte
		want   []string // one per chunk, then the flush
	}{
		{"ascii passthrough", [][]byte{[]byte("hello "), []byte("world\n")}, []string{"hello ", "world\n", ""}},
		{"empty chunk", [][]byte{{}}, []string{"", ""}},
		{"whole multi-byte", [][]byte{[]byte("é€😀")}, []string{"é€😀", ""}},
		{
			"split across 2 calls",
			[][]byte{append([]byte("a"), euro[:1]...), append(euro[1:], 'b')},
			[]string{"a", "€b", ""},
		},
		{
			"split across 3 calls",
			[][]byte{append([]byte("x"), euro[:1]...), euro[1:2], euro[2:]},
			[]string{"x", "", "€", ""},
		},
		{
			"emoji one byte at a time",
			[][]byte{emoji[:1], emoji[1:2], emoji[2:3], emoji[3:]},
			[]string{"", "", "", "😀", ""},
		},
		{"invalid byte", [][]byte{[]byte("a\xffb")}, []string{"a\uFFFDb", ""}},
		{"lone continuation byte", [][]byte{[]byte("a\x80b")}, []string{"a\uFFFDb", ""}},
		{"trailing invalid byte is not held", [][]byte{[]byte("a\xff")}, []string{"a\uFFFD", ""}},
		{
			// A held-back lead byte followed by ASCII was never a character.
			"broken sequence",
			[][]byte{[]byte("a\xe2"), []byte("b")},
			[]string{"a", "\uFFFDb", ""},
		},
		{"truncated at flush", [][]byte{[]byte("ok\xe2")}, []string{"ok", "\uFFFD"}},
		{"surrogate encoding is invalid", [][]byte{[]byte("\xed\xa0\x80")}, []string{"\uFFFD\uFFFD\uFFFD", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := decodeAll(tc.chunks...)
			assert.Equal(t, tc.want, got)
			for _, s := range got {
				assert.True(t, utf8.ValidString(s), "emitted invalid UTF-8 %q", s)
			}
		})
	}
}

func TestUTF8DecoderTruncatedMultiByteAtFlush(t *testing.T) {
	for _, tail := range [][]byte{[]byte("€")[:2], []byte("😀")[:3], []byte("😀")[:2]} {
		var d utf8Decoder
		assert.Empty(t, d.decode(tail), "an incomplete character is held back")
		s := d.flush()
		assert.NotEmpty(t, s)
		assert.Empty(t, strings.ReplaceAll(s, "\uFFFD", ""), "flush of %x must be replacement characters only, got %q", tail, s)
		assert.Empty(t, d.flush(), "flush empties the decoder")
	}
}

func TestUTF8DecoderDoesNotRetainInput(t *testing.T) {
	var d utf8Decoder
	buf := []byte("a\xe2")
	assert.Equal(t, "a", d.decode(buf))
	// The reader reuses its buffer; the held-back byte must be a copy.
	buf[1] = 'Z'
	assert.Equal(t, "€", d.decode([]byte("\x82\xac")))
}

// Any valid text, split anywhere, comes out unchanged and in valid pieces.
func TestUTF8DecoderRandomChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Runes of every encoded length.
	ranges := [][2]rune{{0x20, 0x7e}, {0xa0, 0x7ff}, {0x800, 0xd7ff}, {0xe000, 0xfffd}, {0x10000, 0x10ffff}}
	for iter := range 300 {
		var sb strings.Builder
		for range rng.IntN(64) {
			r := ranges[rng.IntN(len(ranges))]
			sb.WriteRune(r[0] + rng.Int32N(r[1]-r[0]+1))
		}
		text := []byte(sb.String())

		var d utf8Decoder
		var out strings.Builder
		for rest := text; len(rest) > 0; {
			n := min(1+rng.IntN(7), len(rest))
			// Copy so the decoder cannot lean on the input's backing array.
			chunk := d.decode(append([]byte(nil), rest[:n]...))
			require.True(t, utf8.ValidString(chunk), "iteration %d: invalid chunk %q", iter, chunk)
			out.WriteString(chunk)
			rest = rest[n:]
		}
		out.WriteString(d.flush())
		require.Equal(t, string(text), out.String(), "iteration %d", iter)
	}
}

// acquireAsync acquires in a goroutine; the channel yields the credit.
func acquireAsync(w *window, n int) <-chan *credit {
	got := make(chan *credit, 1)
	go func() { got <- w.acquire(n) }()
	return got
}

func used(w *window) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.used
}

func TestWindowAcquireBlocksUntilRelease(t *testing.T) {
	w := newWindow(10)
	first := w.acquire(8)
	require.NotNil(t, first)

	got := acquireAsync(w, 5)
	assert.Never(t, func() bool { return len(got) > 0 }, 50*time.Millisecond, 5*time.Millisecond,
		"8+5 exceeds the limit of 10")

	first.release()
	var second *credit
	require.Eventually(t, func() bool {
		select {
		case second = <-got:
			return true
		default:
			return false
		}
	}, 2*time.Second, time.Millisecond)
	require.NotNil(t, second)
	assert.Equal(t, 5, used(w))
	second.release()
	assert.Equal(t, 0, used(w))
}

func TestWindowFitsWithinLimit(t *testing.T) {
	w := newWindow(10)
	a := w.acquire(4)
	b := w.acquire(6) // exactly the limit: must not block
	require.NotNil(t, a)
	require.NotNil(t, b)
	assert.Equal(t, 10, used(w))
}

func TestWindowOversizedChunkFitsWhenEmpty(t *testing.T) {
	w := newWindow(10)
	// A chunk larger than the window would otherwise wait forever.
	big := w.acquire(100)
	require.NotNil(t, big)
	assert.Equal(t, 100, used(w))

	// But only when empty: the next one waits for it.
	got := acquireAsync(w, 1)
	assert.Never(t, func() bool { return len(got) > 0 }, 50*time.Millisecond, 5*time.Millisecond)
	big.release()
	require.Eventually(t, func() bool { return len(got) > 0 }, 2*time.Second, time.Millisecond)
	assert.NotNil(t, <-got)
}

func TestWindowCloseUnblocksWaiters(t *testing.T) {
	w := newWindow(10)
	held := w.acquire(10)
	require.NotNil(t, held)
	waiters := []<-chan *credit{acquireAsync(w, 1), acquireAsync(w, 5)}
	assert.Never(t, func() bool { return len(waiters[0])+len(waiters[1]) > 0 }, 30*time.Millisecond, 5*time.Millisecond)

	w.close()
	for _, got := range waiters {
		select {
		case c := <-got:
			assert.Nil(t, c, "nobody will write the output: no credit")
		case <-time.After(2 * time.Second):
			t.Fatal("close did not wake a waiter")
		}
	}
	assert.Nil(t, w.acquire(1), "a closed window never grants credit")
	// Releasing a credit from before the close is harmless.
	held.release()
	assert.Equal(t, 0, used(w))
}

func TestCreditReleaseIsIdempotent(t *testing.T) {
	w := newWindow(10)
	a := w.acquire(6)
	b := w.acquire(4)
	a.release()
	a.release()
	assert.Equal(t, 4, used(w), "a second release must not return bytes twice")
	b.release()
	assert.Equal(t, 0, used(w))
}
