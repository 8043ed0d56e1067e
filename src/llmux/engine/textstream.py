"""Turn a token stream into text safely: incremental UTF-8 and stop strings.

Multi-byte characters split across tokens are held until complete (a character the
end of generation cuts off is dropped, as Ollama does, never sent as U+FFFD), and text that
could be the start of a stop string is held until it is known not to be one, so a
stop string never leaks into the output, whatever the token boundaries.
"""

from __future__ import annotations

import codecs


class Utf8Stream:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        """The end of the stream: bytes of an incomplete last character are dropped."""
        self._decoder.reset()
        return ""


class StopMatcher:
    """Feed text pieces; get back what may be emitted and whether a stop matched."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            self.stopped = True
            return buf[:cut]
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:k]):
                    hold = k
                    break
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold] if hold else buf

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held
