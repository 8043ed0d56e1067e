"""Continuous batching: many sequences decoded together in one llama.cpp context.

One thread owns the context (llama.cpp contexts are not thread-safe) and runs a loop
of *steps*. Each step

1. admits waiting requests (first in, first out) into free sequence slots, choosing
   the slot whose cached tokens share the longest prefix with the new prompt, so only
   the rest of the prompt is evaluated (the prefix cache); when another slot, busy or
   not, holds a longer prefix, its cache is copied over first;
2. drops sequences whose client went away or whose deadline passed, so their slot is
   free again within one step;
3. decodes the last sampled token of every generating sequence in one batch and
   samples each one's next token with that sequence's own llama.cpp sampler chain
   (penalty history, grammar state and seeded random generator belong to one request);
4. evaluates pieces of newcomers' prompts, at most ``PREFILL_WHILE_DECODING`` tokens
   while others are generating, so a long prompt does not stall the running streams.

Background requests (``Job.background``: the Batch API's lines) yield to interactive
ones. They wait in a queue of their own, admitted only when no interactive request
waits, and hold at most ``n_slots - 1`` slots (or the only one), so a slot is left
free for an interactive newcomer. While an interactive prompt is being read, background
sequences sit the step out, keeping their state, so that prompt gets the step (all
``BATCH_TOKENS`` when no interactive sequence is generating); a background prompt is
read at most ``PREFILL_WHILE_DECODING`` tokens a step, so a step already under way when
an interactive request arrives is short. Sitting out only delays a sequence's next
call: what it evaluates, and how it is grouped, stays the same.

The KV cache is not unified: every slot is its own stream of ``n_ctx`` cells, so a
sequence's attention never reads other sequences' cells, and its cells always sit in
position order. With flash attention, the values llama.cpp computes for a token depend
on how its sequence's tokens were grouped into micro-batches. So prompts are evaluated
in chunks aligned to positions 0, 64, 128, ..., each sequence's chunks in llama_decode
calls of their own (never mixed with other rows), and only whole chunks are reused or
copied: a request computes the same values with or without the cache, alone or next to
any other traffic. See docs/engine.md.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp._internals import LlamaContext, LlamaModel, LlamaSampler

from llmux.core.chunks import Metrics, TokenLogprob
from llmux.engine.grammar import grammar_for
from llmux.engine.jobs import DoneEvent, ErrorEvent, Event, Job, TextEvent
from llmux.engine.jsonclose import closing_suffix
from llmux.engine.sampling import build_sampler, token_logprob
from llmux.engine.textstream import StopMatcher, Utf8Stream
from llmux.errors import BackendError, InvalidRequest, LlmuxError, Timeout
from llmux.observability.stats import LoopStats

log = logging.getLogger(__name__)
UNLIMITED_RESERVE = 1024  # tokens kept free for an answer of unlimited length

PREFIX_CHUNK = 64  # prompt chunk and micro-batch size; the prefix cache's unit
BATCH_TOKENS = 512  # the most tokens one llama_decode call takes
PREFILL_WHILE_DECODING = 2 * PREFIX_CHUNK  # prompt tokens a step evaluates while others generate
MAX_SLOTS = 64


@dataclass(eq=False)
class Request:
    job: Job
    emit: Callable[[Event], None]
    cancel: threading.Event
    submitted_ns: int = field(default_factory=time.perf_counter_ns)

    @property
    def background(self) -> bool:
        return self.job.background


@dataclass(eq=False)
class Sequence:
    """A request running in a slot."""

    request: Request
    prompt: list[int]
    cached: int
    sampler: LlamaSampler
    constrained: bool
    limit: float
    shift: bool  # may the context shift when full (an explicit num_predict asked for more)
    started_ns: int
    evaluated: int  # prompt tokens in the KV cache
    first_ns: int = 0
    next_token: int | None = None  # sampled, not yet evaluated
    produced: list[int] = field(default_factory=list)
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    stops: StopMatcher = field(default_factory=lambda: StopMatcher(()))
    emitted: list[str] = field(default_factory=list)  # kept under a grammar only
    pending: list[TokenLogprob] = field(default_factory=list)

    @property
    def job(self) -> Job:
        return self.request.job


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # this sequence's KV cells, by position
    exact: int = 0  # leading tokens evaluated as whole prompt chunks: reusable bit for bit
    last_used: float = 0.0
    interactive: bool = False  # its cells were last an interactive request's
    running: Sequence | None = None


@dataclass(eq=False)
class _Entry:
    slot: Slot
    tokens: list[int]
    pos: int
    prefill: bool
    completes: bool = True  # the last token needs logits: generating, or the prompt's end
    index: int = -1  # batch row whose logits are read


class BatchLoop:
    """The scheduler of one loaded model; :meth:`submit` is safe from any thread."""

    def __init__(
        self,
        name: str,
        model: LlamaModel,
        ctx: LlamaContext,
        n_slots: int,
        n_ctx: int,
        after_step: Callable[[], None] = lambda: None,
    ) -> None:
        """``after_step`` runs on the loop thread after every step, so a bridge can hand
        the events a step emitted to their consumers in one go."""
        self.name = name
        self.after_step = after_step
        self.model = model
        self.ctx = ctx
        self.n_ctx = n_ctx  # per slot
        self.slots = [Slot(i) for i in range(n_slots)]
        self.stats = LoopStats()  # read by the metrics registry when it is scraped
        self._mem = llama_cpp.llama_get_memory(ctx.ctx)
        self._can_shift = bool(llama_cpp.llama_memory_can_shift(self._mem))
        self._batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self._waiting: deque[Request] = deque()  # interactive, first come first served
        self._background: deque[Request] = deque()  # batch lines, admitted after all of those
        # background sequences leave one slot for interactive work, unless there is one only
        self._background_slots = max(1, n_slots - 1)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"llmux-{name}", daemon=True)
        self._thread.start()

    # -- any thread ----------------------------------------------------------------
    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closed:
                request.emit(ErrorEvent(BackendError(f"model '{self.name}' was unloaded")))
                self.after_step()
                return
            (self._background if request.background else self._waiting).append(request)
            self._cond.notify()

    @property
    def waiting(self) -> int:
        return len(self._waiting) + len(self._background)

    @property
    def running(self) -> int:
        return sum(1 for s in self.slots if s.running is not None)

    @property
    def kv_used(self) -> int:
        """KV cells holding tokens, over every slot (of ``n_ctx`` x slots)."""
        return sum(len(s.tokens) for s in self.slots)

    def close(self) -> None:
        """Stop the loop (running and waiting requests get an error), then free the
        context and the model."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # -- the loop thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self.waiting and not self.running:
                        self._cond.wait()
                    if self._closed:
                        break
                    self._drop_stale_waiting()
                    arrivals = self._admissions()
                try:
                    self._step(arrivals)
                except Exception as exc:  # a bug must not leave streams hanging
                    log.exception("%s: scheduler step failed", self.name)
                    self._fail_running(BackendError(f"generation failed: {exc}"))
                self.after_step()
        finally:
            gone = BackendError(f"model '{self.name}' was unloaded")
            self._fail_running(gone)
            with self._cond:
                for queue in (self._waiting, self._background):
                    while queue:
                        queue.popleft().emit(ErrorEvent(gone))
            self.after_step()
            llama_cpp.llama_batch_free(self._batch)
            self.ctx.close()
            self.model.close()

    def _admissions(self) -> list[Request]:
        """Waiting requests for the free slots: every interactive one first, then
        background ones as long as they hold at most ``_background_slots`` slots."""
        free = sum(1 for s in self.slots if s.running is None)
        arrivals = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
        held = sum(1 for s in self.slots if s.running is not None and s.running.request.background)
        room = min(free - len(arrivals), self._background_slots - held, len(self._background))
        arrivals += [self._background.popleft() for _ in range(max(room, 0))]
        return arrivals

    def _drop_stale_waiting(self) -> None:
        """Forget queued requests whose client left; answer those past their deadline."""
        now = time.monotonic()
        self._waiting, interactive = self._live(self._waiting, now)
        self._background, background = self._live(self._background, now)
        if interactive + background:
            log.info("%s: dropped %d queued requests whose clients left", self.name, interactive + background)  # fmt: skip

    @staticmethod
    def _live(queue: deque[Request], now: float) -> tuple[deque[Request], int]:
        """The requests of ``queue`` still wanted and in time, and how many had left."""
        keep: deque[Request] = deque()
        dropped = 0
        for request in queue:
            deadline = request.job.deadline
            if request.cancel.is_set():
                dropped += 1
            elif deadline is not None and now > deadline:
                request.emit(ErrorEvent(Timeout("the request waited in the queue past its deadline")))  # fmt: skip
            else:
                keep.append(request)
        return keep, dropped

    def _step(self, arrivals: list[Request]) -> None:
        for request in arrivals:
            self._start(request)
        now = time.monotonic()
        for slot in self.slots:
            seq = slot.running
            if seq is None:
                continue
            if seq.request.cancel.is_set():
                log.info(
                    "%s: generation cancelled after %d tokens (client went away)",
                    self.name,
                    len(seq.produced),
                )
                self._finish(slot, "stop")
            elif seq.job.deadline is not None and now > seq.job.deadline:
                self._fail(slot, Timeout("the request ran past its deadline (request_timeout)"))
        calls = self._plan()
        if calls:
            self.stats.step(self.running, len(self.slots))
        for entries in calls:
            self._decode(entries)

    # -- admission ---------------------------------------------------------------------
    def _start(self, request: Request) -> None:
        if request.cancel.is_set():
            return
        job = request.job
        s = job.sampling
        try:
            if job.deadline is not None and time.monotonic() > job.deadline:
                raise Timeout("the request waited in the queue past its deadline")
            prompt = self._prompt_tokens(job)
            slot, cached = self._take_slot(prompt, request.background)
            grammar = grammar_for(job.format)
            sampler = build_sampler(
                self.model,
                temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                typical_p=s.typical_p, repeat_penalty=s.repeat_penalty,
                repeat_last_n=s.repeat_last_n if s.repeat_last_n >= 0 else self.n_ctx,
                presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty,
                seed=s.seed, grammar=grammar, logit_bias=dict(job.logit_bias),
            )  # fmt: skip
        except LlmuxError as exc:
            request.emit(ErrorEvent(exc))
            return
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, cached, -1)
        del slot.tokens[cached:]
        slot.exact = min(slot.exact, cached)
        slot.running = Sequence(
            request=request,
            prompt=prompt,
            cached=cached,
            sampler=sampler,
            constrained=grammar is not None,
            limit=s.num_predict if s.num_predict >= 0 else math.inf,
            shift=s.num_predict > 0 and self._can_shift,
            started_ns=time.perf_counter_ns(),
            evaluated=cached,
            stops=StopMatcher(s.stop),
        )
        self.stats.prompt_tokens += len(prompt)
        self.stats.cached_tokens += cached
        if s.num_predict == 0:
            self._finish(slot, "length")

    def _prompt_tokens(self, job: Job) -> list[int]:
        n_vocab = self.model.n_vocab()
        if any(not 0 <= t < n_vocab for t in job.context):
            raise InvalidRequest(
                f"context holds token ids outside this model's vocabulary (0..{n_vocab - 1})",
                param="context",
            )
        text = job.prompt.encode("utf-8")
        tokens = list(job.context) + self.model.tokenize(text, add_bos=job.add_bos, special=True)
        return self._fit_context(tokens or [self.model.token_bos()], job.sampling.num_predict)

    def _fit_context(self, tokens: list[int], num_predict: int) -> list[int]:
        """Keep the newest tokens when a prompt does not fit, leaving room to answer:
        ``num_predict`` (at most half the context), else a quarter of it, at most
        :data:`UNLIMITED_RESERVE`: an 8K context keeps 7K of prompt, which Open WebUI's
        default tool list needs."""
        n_ctx = self.n_ctx
        unlimited = min(n_ctx // 4, UNLIMITED_RESERVE)
        reserve = min(num_predict if num_predict > 0 else unlimited, n_ctx // 2)
        room = n_ctx - max(reserve, 1)
        if len(tokens) <= room:
            return tokens
        log.warning(
            "%s: prompt of %d tokens truncated to the last %d (num_ctx=%d)",
            self.name,
            len(tokens),
            room,
            n_ctx,
        )
        return tokens[-room:]

    def _take_slot(self, prompt: list[int], background: bool = False) -> tuple[Slot, int]:
        """A free slot for the prompt and how many of its tokens are already in it.

        The slot is the free one that reuses the most of the prompt; ties go to the one
        that keeps the running sequences' ids in the fewest runs (llama.cpp evaluates
        each run of consecutive ids as its own micro-batch, one more pass over the
        weights per run), then to the least recently used. When another slot, busy or
        not, holds a longer prefix, its cache is copied into the chosen slot. A background
        request takes a slot an interactive one used last only when no other is free, so
        batch lines do not wipe the cache of a conversation that is still going."""
        running = {s.seq_id for s in self.slots if s.running is not None}

        def reusable(slot: Slot) -> int:  # whole chunks, leaving one token to evaluate
            n = min(common_prefix(slot.tokens, prompt), slot.exact, len(prompt) - 1)
            return n - n % PREFIX_CHUNK

        def runs_with(slot: Slot) -> int:
            ids = running | {slot.seq_id}
            return sum(1 for i in ids if i - 1 not in ids)

        reuse = {s.seq_id: reusable(s) for s in self.slots}
        free = [s for s in self.slots if s.running is None]
        spare = [s for s in free if not s.interactive] if background else []
        slot = max(spare or free, key=lambda s: (reuse[s.seq_id], -runs_with(s), -s.last_used))
        slot.interactive = not background
        cached = reuse[slot.seq_id]
        donor = max(self.slots, key=lambda s: reuse[s.seq_id])
        if reuse[donor.seq_id] > cached:
            cached = reuse[donor.seq_id]
            # a copy between streams takes the whole stream; drop what isn't shared
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._mem, donor.seq_id, slot.seq_id, -1, -1)
            slot.tokens = donor.tokens[:cached]
            slot.exact = cached
        return slot, cached

    # -- one step --------------------------------------------------------------------------
    def _plan(self) -> list[list[_Entry]]:
        """This step's llama_decode calls: one with every generating sequence's token,
        then one per prompt piece (whole aligned chunks, or up to the prompt's end).

        While an interactive prompt is being read, background sequences sit the step
        out (their state waits untouched), so that prompt gets the step to itself; a
        background prompt is read at most ``PREFILL_WHILE_DECODING`` tokens a step."""
        running = [(s, s.running) for s in self.slots if s.running is not None]
        reading = any(  # an interactive prompt is still being read
            not seq.request.background and seq.evaluated < len(seq.prompt) for _, seq in running
        )
        if reading and any(seq.request.background for _, seq in running):
            self.stats.yielded_steps += 1
            running = [(slot, seq) for slot, seq in running if not seq.request.background]
        generating: list[_Entry] = []
        prefilling: list[tuple[Slot, Sequence]] = []
        for slot, seq in running:
            if seq.next_token is not None:
                generating.append(_Entry(slot, [seq.next_token], len(slot.tokens), prefill=False))
            elif seq.evaluated < len(seq.prompt):
                prefilling.append((slot, seq))
        calls = [generating] if generating else []
        # without an interactive prompt to read, the prompts here are background ones
        budget = BATCH_TOKENS if reading and not generating else PREFILL_WHILE_DECODING
        for slot, seq in sorted(prefilling, key=lambda pair: pair[1].started_ns):
            end = min(len(seq.prompt), seq.evaluated + budget)
            if end < len(seq.prompt):
                end -= end % PREFIX_CHUNK  # stop on a chunk boundary
            if end <= seq.evaluated:
                break
            chunk = seq.prompt[seq.evaluated : end]
            done = end == len(seq.prompt)
            calls.append([_Entry(slot, chunk, seq.evaluated, prefill=True, completes=done)])
            budget -= len(chunk)
        return calls

    def _decode(self, entries: list[_Entry]) -> None:
        batch = self._batch
        n = 0
        for entry in entries:
            for i, token in enumerate(entry.tokens):
                batch.token[n] = token
                batch.pos[n] = entry.pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = entry.slot.seq_id
                wants = i == len(entry.tokens) - 1 and entry.completes
                batch.logits[n] = wants
                if wants:
                    entry.index = n
                n += 1
        batch.n_tokens = n
        self.stats.batch.observe(len(entries))
        rc = llama_cpp.llama_decode(self.ctx.ctx, batch)
        if rc != 0:
            error = BackendError(f"llama_decode failed with status {rc}")
            for entry in entries:
                llama_cpp.llama_memory_seq_rm(self._mem, entry.slot.seq_id, -1, -1)
                entry.slot.tokens.clear()
                entry.slot.exact = 0
                self._fail(entry.slot, error)
            return
        now_ns = time.perf_counter_ns()
        for entry in entries:
            slot, seq = entry.slot, entry.slot.running
            assert seq is not None
            slot.tokens.extend(entry.tokens)
            if entry.prefill:
                seq.evaluated += len(entry.tokens)
                slot.exact = len(slot.tokens) - len(slot.tokens) % PREFIX_CHUNK
                if seq.evaluated < len(seq.prompt):
                    continue
                seq.first_ns = now_ns
            seq.next_token = None
            self._advance(slot, entry.index)

    def _advance(self, slot: Slot, index: int) -> None:
        """Sample the sequence's next token from the logits at ``index`` and emit it."""
        seq = slot.running
        assert seq is not None
        token = seq.sampler.sample(self.ctx, index)
        if llama_cpp.llama_vocab_is_eog(self.model.vocab, token):
            self._finish(slot, "stop")
            return
        if seq.job.top_logprobs is not None:
            seq.pending.append(
                token_logprob(self.model, self.ctx, index, token, seq.job.top_logprobs)
            )
        seq.produced.append(token)
        self.stats.generated_tokens += 1
        text = seq.stops.feed(seq.utf8.feed(self.model.detokenize([token])))
        if text:
            seq.request.emit(TextEvent(text, tuple(seq.pending)))
            seq.pending.clear()
            if seq.constrained:
                seq.emitted.append(text)
        if seq.stops.stopped:
            self._finish(slot, "stop")
        elif len(seq.produced) >= seq.limit or (
            len(slot.tokens) + 1 >= self.n_ctx and not self._shift(slot)
        ):
            self._finish(slot, "length")
        else:
            seq.next_token = token

    def _shift(self, slot: Slot) -> bool:
        """Make room in a full slot the way Ollama does: keep the first ``num_keep``
        tokens, drop half of the rest, move the newer half down."""
        seq = slot.running
        assert seq is not None
        if not seq.shift:
            return False
        keep = max(0, min(seq.job.sampling.num_keep, len(slot.tokens) - 2))
        discard = (len(slot.tokens) - keep) // 2
        if discard <= 0:
            return False
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, keep, keep + discard)
        llama_cpp.llama_memory_seq_add(self._mem, slot.seq_id, keep + discard, -1, -discard)
        del slot.tokens[keep : keep + discard]
        slot.exact = 0  # moved cells no longer equal a fresh evaluation
        log.info("%s: context full, shifted out %d tokens", self.name, discard)
        return True

    # -- ending a sequence ---------------------------------------------------------------------
    def _finish(self, slot: Slot, reason: str) -> None:
        seq = slot.running
        assert seq is not None
        tail = seq.stops.feed(seq.utf8.flush()) + seq.stops.flush()
        if seq.constrained and (reason == "length" or seq.stops.stopped):
            tail += closing_suffix("".join(seq.emitted) + tail)
        if tail or seq.pending:
            seq.request.emit(TextEvent(tail, tuple(seq.pending)))
        now = time.perf_counter_ns()
        first = seq.first_ns or now
        metrics = Metrics(
            prompt_tokens=len(seq.prompt),
            cached_tokens=seq.cached,
            completion_tokens=len(seq.produced),
            total_ns=now - seq.request.submitted_ns,
            prompt_eval_ns=max(first - seq.started_ns, 1),
            eval_ns=max(now - first, 1),
        )
        context = tuple(seq.prompt + seq.produced) if seq.job.return_context else None
        self._release(slot)
        seq.request.emit(DoneEvent(reason=reason, metrics=metrics, context=context))

    def _fail(self, slot: Slot, error: LlmuxError) -> None:
        seq = slot.running
        assert seq is not None
        self._release(slot)
        seq.request.emit(ErrorEvent(error))

    def _release(self, slot: Slot) -> None:
        seq = slot.running
        assert seq is not None
        seq.sampler.close()
        slot.running = None
        slot.last_used = time.monotonic()

    def _fail_running(self, error: LlmuxError) -> None:
        for slot in self.slots:
            if slot.running is not None:
                self._fail(slot, error)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
