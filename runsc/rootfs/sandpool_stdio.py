"""Make unbuffered stdout and stderr finish every write.

Installed into the sandbox rootfs by `make rootfs` and imported from
sitecustomize, so it runs at every interpreter start (venvs included).

Why: in gVisor, a blocking write to a host pipe can complete only in part
once the pipe is nearly full. With PYTHONUNBUFFERED=1 (or -u), CPython's
sys.stdout and sys.stderr write straight to a raw FileIO and ignore a short
write's count, so the rest of the text is silently lost. Here they get a raw
writer that loops until everything is written; buffering and streaming stay
as they were.
"""

import io
import select
import sys

# The replaced streams must stay alive: collecting one closes fds 1 and 2.
_originals = []


class _FullWriter(io.RawIOBase):
    """A raw writer over a FileIO that never returns a short write."""

    def __init__(self, raw):
        self._raw = raw

    def writable(self):
        return True

    def fileno(self):
        return self._raw.fileno()

    def isatty(self):
        return self._raw.isatty()

    def write(self, data):
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            n = self._raw.write(view[done:])
            if n is None:  # non-blocking fd and full: wait until writable
                select.select([], [self._raw], [])
                continue
            done += n
        return done

    def close(self):
        # fds 1 and 2 belong to the process, not to this wrapper.
        super().close()


def _install():
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        raw = getattr(stream, "buffer", None)
        if type(raw) is not io.FileIO:
            continue  # buffered mode (BufferedWriter handles short writes) or replaced
        wrapper = io.TextIOWrapper(
            _FullWriter(raw),
            encoding=stream.encoding,
            errors=stream.errors,
            line_buffering=stream.line_buffering,
            write_through=True,
        )
        _originals.append(stream)
        setattr(sys, name, wrapper)
        if getattr(sys, "__%s__" % name, None) is stream:
            setattr(sys, "__%s__" % name, wrapper)


_install()
