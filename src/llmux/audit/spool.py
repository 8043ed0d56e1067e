"""The append-only local spool: one JSON line per record, in files under
``[audit] spool_dir`` (default ``$LLMUX_HOME/audit``), before the database has them.

**Durability.** :meth:`Spool.append` numbers a record, links it to the one before,
hashes it and writes its line with one ``write(2)`` on the event loop (a few
microseconds: the kernel's page cache, no disk wait). The policy calls it when an
operation ends, before the response's last bytes are sent, so once a client has the
whole response its record is in the kernel: killing the process (SIGKILL included)
cannot lose it. A background thread flushes the file to disk (``fsync``) at most every
``[audit] fsync_s``, one fsync for every record written meanwhile (group fsync), so a
power loss can lose at most that window. With ``[audit] wait_for_fsync = true`` a
response's end also waits for the group fsync that covers its record
(:meth:`Spool.synced`), which closes that window at the price of the disk's flush time.

**Files.** ``spool-<first seq>.jsonl`` in a *slot* folder (``0``, ``1``, ...): the
first slot this process can lock (``flock``), so two processes sharing a home never
share a spool; a killed process's lock goes with it, and its successor takes the slot
and its spool back. A file is closed at ``[audit] rotate_mib`` and a new one begun; the
drainer (``drain.py``) deletes files it has written to the database. On start the chain
continues from the newest record in the spool or the database, whichever is later; a
torn last line (a power loss mid-write) is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmux.audit.record import GENESIS, NAMES, TEMPLATE, encode, iso_us
from llmux.errors import LlmuxError
from llmux.storage.audit import columns

log = logging.getLogger(__name__)
PREFIX, SUFFIX = "spool-", ".jsonl"
LOCK = "lock"
MAX_SLOTS = 64
TAIL_BYTES = 1 << 20  # what recovery reads of a file's end to find its last record
MAX_FRESH = 10_000  # rows kept for the drainer; past it, it reads them from the file


def spool_files(folder: Path) -> list[Path]:
    """The spool's files, oldest first (their names hold their first record's seq)."""
    return sorted(folder.glob(f"{PREFIX}*{SUFFIX}"))


def file_name(seq: int) -> str:
    return f"{PREFIX}{seq:012d}{SUFFIX}"


def default_replica(folder: Path) -> str:
    """The host name and a digest of the spool folder: the same on every restart,
    different for two homes on one host."""
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


def claim_slot(folder: Path) -> tuple[Path, int, int]:
    """The first slot folder this process can lock: (folder, slot, the lock's fd)."""
    for slot in range(MAX_SLOTS):
        path = folder / str(slot)
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LlmuxError(f"[audit] cannot use the spool folder {path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return path, slot, fd
    raise LlmuxError(f"[audit] all {MAX_SLOTS} spool slots in {folder} are in use")


def last_record(path: Path) -> dict[str, Any] | None:
    """The last whole record of a spool file; a torn or unreadable tail is cut off."""
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - TAIL_BYTES)
        f.seek(start)
        tail = f.read()
        keep = size
        found: dict[str, Any] | None = None
        lines = tail.split(b"\n")
        if not tail.endswith(b"\n"):
            keep -= len(lines[-1])
        for line in reversed(lines[:-1]):
            try:
                found = json.loads(line)
                break
            except ValueError:
                keep -= len(line) + 1
        if keep != size:
            log.warning("audit spool %s: cut off a torn last line (%d bytes)", path, size - keep)
            f.truncate(keep)
        return found


@dataclass(frozen=True, slots=True)
class Fresh:
    """A record this process wrote, as its row, and where its line is: the drainer
    takes these instead of reading and parsing the line again."""

    file: str
    start: int
    end: int
    row: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Written:
    """A record as the spool wrote it."""

    seq: int
    prev_hash: str
    hash: str


class Spool:
    """Made with the settings; :meth:`open` gives it its slot folder and replica."""

    def __init__(self, *, fsync_s: float = 0.1, rotate_bytes: int = 64 << 20) -> None:
        self.folder = Path()
        self.replica = ""
        self.fsync_s = fsync_s
        self.rotate_bytes = rotate_bytes
        self.seq = 0  # the last record's
        self.head = GENESIS  # ... and its hash
        self.synced_seq = 0
        self.failing: str | None = "not open yet"  # why writes fail, until one succeeds
        self.current: Path | None = None
        self._fd: int | None = None
        self._size = 0
        self._pending: list[tuple[bytes, dict[str, Any]]] = []  # (line, row) not yet written
        self.fresh: deque[Fresh] = deque()  # written, not yet drained (at most MAX_FRESH)
        self._state: tuple[int | None, int] = (None, 0)  # (fd, seq written): the syncer's view
        self._retired: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._kick = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- opening and closing ---------------------------------------------------------------

    def open(self, folder: Path, replica: str, stored: tuple[int, str] | None = None) -> None:
        """Recover the chain's head (the spool's newest record or ``stored``, the
        database's, whichever is later) and start the fsync thread."""
        self.folder, self.replica = folder, replica
        for path in reversed(spool_files(self.folder)):
            found = last_record(path)
            if found is not None:
                if found.get("replica") == self.replica:
                    self.seq, self.head = int(found["seq"]), str(found["hash"])
                break
        if stored is not None and stored[0] > self.seq:
            self.seq, self.head = stored
        self.synced_seq = self.seq
        self.failing = None
        self._thread = threading.Thread(target=self._syncer, name="audit-fsync", daemon=True)
        self._thread.start()
        log.info("audit spool %s: replica %s continues at seq %d", self.folder, self.replica,
                 self.seq + 1)  # fmt: skip

    def close(self) -> None:
        """The last fsync, then the file closed."""
        self._closing = True
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- writing ---------------------------------------------------------------------------

    def append(self, fields: dict[str, Any]) -> Written:
        """Number, link, hash and write one record (``fields``: any of the record's
        but replica, seq, prev_hash, ts and hash). A failed write keeps the line for
        the next call and sets :attr:`failing`."""
        if self._thread is None:
            raise LlmuxError("the audit spool is not open")
        if not fields.keys() <= NAMES:
            raise ValueError(f"not audit record fields: {sorted(fields.keys() - NAMES)}")
        seq, prev = self.seq + 1, self.head
        body = {**TEMPLATE, **fields}
        body["replica"], body["seq"], body["prev_hash"] = self.replica, seq, prev
        now_us = time.time_ns() // 1000
        body["ts"] = iso_us(now_us)
        form, digest, line = encode(body)
        self.seq, self.head = seq, digest
        self._pending.append((line, columns(body, form.decode(), digest, now_us)))
        self._write(seq)
        return Written(seq, prev, digest)

    def _write(self, seq: int) -> None:
        pending = self._pending
        data = b"".join(line for line, _ in pending) if len(pending) > 1 else pending[0][0]
        try:
            if self._fd is None or self._size >= self.rotate_bytes:
                self._rotate(seq - len(self._pending) + 1)
            assert self._fd is not None
            done = 0
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as exc:
            self._failed(exc)
            return
        assert self.current is not None
        name, at = self.current.name, self._size
        for line, row in pending:
            if len(self.fresh) < MAX_FRESH:
                self.fresh.append(Fresh(name, at, at + len(line), row))
            at += len(line)
        pending.clear()
        self._size = at
        self._state = (self._fd, seq)
        if self.failing is not None:
            log.warning("audit spool %s: writing again", self.folder)
            self.failing = None

    def _failed(self, exc: OSError) -> None:
        """No half line stays behind; the next write begins a new file."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            self._retired.put(self._fd)
            self._fd = None
        if self.failing is None:
            log.error("audit spool %s: cannot write (%s); model requests are refused until it "
                      "can", self.folder, exc)  # fmt: skip
        self.failing = str(exc)

    def _rotate(self, first_seq: int) -> None:
        path = self.folder / file_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        old, self._fd = self._fd, fd
        self._size = os.fstat(fd).st_size
        self.current = path
        if old is not None:
            self._retired.put(old)  # the syncer flushes and closes it
            self._kick.set()

    def retry(self) -> bool:
        """Write what a failed write left, if anything; whether the spool works."""
        if self._pending:
            self._write(self.seq)
        return self.failing is None

    # -- fsync -----------------------------------------------------------------------------

    def synced(self, seq: int) -> asyncio.Future[None] | None:
        """A future resolved once record ``seq`` is on disk; None when it is already."""
        if seq <= self.synced_seq:
            return None
        self._loop = loop = self._loop or asyncio.get_running_loop()  # the syncer resolves on it
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((seq, future))
        self._kick.set()
        return future

    def _syncer(self) -> None:
        """Every ``fsync_s``, or at once when a response waits: one fsync for all the
        records written since the last."""
        while True:
            self._kick.wait(self.fsync_s)
            self._kick.clear()
            # one read: records up to ``written`` are in ``fd`` or in a file retired
            # before it (queued before the state changed); only this thread closes those
            fd, written = self._state
            ok = written <= self.synced_seq or fd is None or self._fsync(fd)
            while not self._retired.empty():
                old = self._retired.get_nowait()
                ok = self._fsync(old) and ok
                with contextlib.suppress(OSError):
                    os.close(old)
            if ok and written > self.synced_seq:
                self.synced_seq = written
            if self._waiters and self._loop is not None:  # also those that came just after
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    self._loop.call_soon_threadsafe(self._release, self.synced_seq)
            if self._closing:
                return

    def _fsync(self, fd: int) -> bool:
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EBADF:  # a file that failed a write is retired closed
                log.error("audit spool %s: fsync failed: %s", self.folder, exc)
            return exc.errno == errno.EBADF
        return True

    def _release(self, written: int) -> None:
        while self._waiters and self._waiters[0][0] <= written:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
