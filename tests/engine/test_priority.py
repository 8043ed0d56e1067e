"""Priority classes in the scheduler, on the bundled model: background requests (the
Batch API's lines) are admitted after every interactive one, leave a slot free, sit out
the steps that read an interactive prompt, and still give the text they give alone.

Order is asserted in scheduler steps, seen from the loop thread (:class:`Trace`); a
trigger run after a step submits or cancels at a known point, so no test depends on
how fast the machine is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmux.config import EngineSettings
from llmux.core.context import Priority, RequestContext
from llmux.core.names import ModelName
from llmux.core.request import ChatRequest, Message
from llmux.engine.batch import PREFIX_CHUNK, BatchLoop, Sequence
from llmux.engine.engine import LocalEngine
from llmux.engine.jobs import DoneEvent, ErrorEvent, Job
from llmux.errors import Timeout
from llmux.models.bundled import bundled_gguf, register_bundled
from llmux.models.store import ModelStore
from tests.engine.test_scheduler import Reply, make_loop, submit

pytestmark = pytest.mark.model
STORY = "Once upon a time a lighthouse keeper lived alone on a small rocky island. "
LONG = "The quick brown fox jumps over the lazy dog while the farmer sleeps. " * 50
WAIT = 180  # seconds a reply may take on a slow machine; never asserted


class Trace:
    """A loop's ``after_step``, run on the loop thread: for every prompt, the step in
    which it first held a slot (``admitted``) and first had a token (``answering``);
    the most slots background sequences held after any step; ``overlaps``, steps in
    which a background sequence moved on while an interactive prompt was being read;
    and triggers, run one at a time after each step until each returns True."""

    def __init__(self, loop: BatchLoop) -> None:
        self.loop = loop
        self.steps = 0
        self.admitted: dict[str, int] = {}
        self.answering: dict[str, int] = {}
        self.background_held = 0
        self.overlaps = 0
        self.triggers: deque[Callable[[], bool]] = deque()
        self._last: dict[Sequence, tuple[bool, int]] = {}  # reading, tokens done: last step
        loop.after_step = self

    def __call__(self) -> None:
        self.steps += 1
        running = [s.running for s in self.loop.slots if s.running is not None]
        held = sum(1 for seq in running if seq.request.background)
        self.background_held = max(self.background_held, held)
        for seq in running:
            self.admitted.setdefault(seq.job.prompt, self.steps)
            if seq.first_ns:
                self.answering.setdefault(seq.job.prompt, self.steps)
        self._note_overlap(running)
        if self.triggers and self.triggers[0]():
            self.triggers.popleft()

    def _note_overlap(self, running: list[Sequence]) -> None:
        now = {q: (q.evaluated < len(q.prompt), q.evaluated + len(q.produced)) for q in running}
        last = self._last
        # an interactive sequence new in this step, or still reading after the last one,
        # read its prompt in this step
        reading = any(not q.request.background and last.get(q, (True, 0))[0] for q in running)
        moved = any(q.request.background and q in last and now[q] != last[q] for q in running)
        self.overlaps += reading and moved
        self._last = now

    def answered(self, *prompts: str) -> bool:
        return all(p in self.answering for p in prompts)


@pytest.fixture()
def loops() -> Iterator[Callable[..., BatchLoop]]:
    """``make_loop``, with every loop made closed at the end of the test."""
    made: list[BatchLoop] = []

    def make(n_slots: int, flash_attn: bool = True) -> BatchLoop:
        made.append(make_loop(n_slots, flash_attn))
        return made[-1]

    yield make
    for loop in made:
        loop.close()


def done(reply: Reply) -> DoneEvent:
    assert reply.done.wait(WAIT), "no answer"
    assert isinstance(reply.end, DoneEvent), reply.end
    return reply.end


def test_interactive_is_admitted_before_waiting_background(loops: Callable[..., BatchLoop]) -> None:  # fmt: skip
    loop = loops(3)
    trace = Trace(loop)
    prompts = [f"Story {i}: {STORY}" for i in range(4)]
    ask = "What is two plus two?"
    background = [submit(loop, p, 400 if i < 2 else 4, background=True) for i, p in enumerate(prompts)]  # fmt: skip
    seen: dict[str, Any] = {}

    def interactive_arrives() -> bool:  # both long background requests are answering
        if not trace.answered(*prompts[:2]):
            return False
        seen["waiting"], seen["free"] = loop.waiting, len(loop.slots) - loop.running
        seen["reply"] = submit(loop, ask, 4)
        return True

    def it_finished() -> bool:  # then a few steps with a free slot and background waiting
        if not seen["reply"].done.is_set():
            return False
        seen.setdefault("after", trace.steps)
        if trace.steps < seen["after"] + 3:
            return False
        seen["still_waiting"] = loop.waiting
        for reply in background[:2]:
            reply.cancel.set()
        return True

    trace.triggers.extend([interactive_arrives, it_finished])
    for reply in background:
        done(reply)
    done(seen["reply"])
    assert seen["waiting"] == 2 and seen["free"] == 1, "background took the last slot"
    assert seen["still_waiting"] == 2, "background was admitted into the last free slot"
    assert all(trace.admitted[ask] < trace.admitted[p] for p in prompts[2:])
    assert trace.answering[ask] < min(trace.answering[p] for p in prompts[2:])
    assert trace.background_held == 2 and trace.overlaps == 0
    assert loop.waiting == 0 and loop.running == 0


def test_one_slot_serves_background_and_interactive_goes_first(loops: Callable[..., BatchLoop]) -> None:  # fmt: skip
    loop = loops(1)
    trace = Trace(loop)
    first, second, ask = f"First: {STORY}", f"Second: {STORY}", "What is two plus two?"
    background = [submit(loop, first, 20, background=True), submit(loop, second, 4, background=True)]  # fmt: skip
    seen: dict[str, Reply] = {}

    def interactive_arrives() -> bool:
        if not trace.answered(first):
            return False
        seen["reply"] = submit(loop, ask, 4)
        return True

    trace.triggers.append(interactive_arrives)
    for reply in background:
        done(reply)
    done(seen["reply"])
    assert trace.admitted[first] < trace.admitted[ask] < trace.admitted[second]


def run_background(loop: BatchLoop, trace: Trace, prompt: str, interrupt: int) -> tuple[str, DoneEvent, bool]:  # fmt: skip
    """One background request with a long prompt; with ``interrupt`` (tokens), an
    interactive request of that many tokens arrives while it reads its prompt and
    another, with a long prompt, while it answers. Returns the text, the end and
    whether the first interactive request had its answer while the background one
    was still reading its prompt."""
    reply = submit(loop, prompt, 48, background=True)
    interactive: list[Reply] = []
    overtook: list[bool] = []

    def running() -> Any:
        return next((s.running for s in loop.slots if s.running and s.running.job.prompt == prompt), None)  # fmt: skip

    def mid_prompt() -> bool:
        seq = running()
        if seq is None or not 0 < seq.evaluated < len(seq.prompt):
            return False
        interactive.append(submit(loop, "What is two plus two?", interrupt))
        return True

    def answered() -> bool:
        if not (interactive[0].text or interactive[0].done.is_set()):
            return False
        seq = running()
        overtook.append(seq is not None and seq.evaluated < len(seq.prompt))
        return True

    def mid_answer() -> bool:
        seq = running()
        if seq is None or len(seq.produced) < 8 or not interactive[0].done.is_set():
            return False
        interactive.append(submit(loop, LONG, interrupt))
        return True

    if interrupt:
        trace.triggers.extend([mid_prompt, answered, mid_answer])
    end = done(reply)
    for other in interactive:
        done(other)
    assert len(interactive) == (2 if interrupt else 0)
    return reply.text, end, overtook == [True]


@pytest.mark.parametrize(
    ("flash_attn", "interactive_tokens"),
    [
        # with flash attention, a token decoded in one call with another sequence's can
        # differ in the last digits from one decoded alone (measured on the bundled
        # model): one-token interactive replies pause the line but never join its calls
        pytest.param(True, 1, id="flash-attention-paused"),
        pytest.param(False, 3, id="exact-paused-and-batched"),
    ],
)
def test_background_output_is_the_same_when_paused(
    loops: Callable[..., BatchLoop], flash_attn: bool, interactive_tokens: int
) -> None:
    prompt = "Continue this story. " + STORY * 30  # several steps of prompt
    # a fresh loop for each run, so neither reuses the other's prompt cache
    alone_loop = loops(2, flash_attn)
    alone, alone_end, _ = run_background(alone_loop, Trace(alone_loop), prompt, interrupt=0)
    assert alone_loop.stats.yielded_steps == 0
    paused_loop = loops(2, flash_attn)
    trace = Trace(paused_loop)
    paused, paused_end, overtook = run_background(paused_loop, trace, prompt, interactive_tokens)
    # it sat out the steps that read both interactive prompts (the long one takes two)
    assert paused_loop.stats.yielded_steps >= 3
    assert overtook, "the interactive request did not get its answer first"
    assert trace.overlaps == 0, "a background sequence moved on while a prompt was read"
    assert alone_end.metrics.completion_tokens == paused_end.metrics.completion_tokens == 48
    assert alone_end.metrics.prompt_tokens == paused_end.metrics.prompt_tokens
    assert paused == alone


def test_background_behind_interactive_still_finishes(loops: Callable[..., BatchLoop]) -> None:
    loop = loops(2)
    trace = Trace(loop)
    asks = [f"Question {i}: {STORY}" for i in range(3)]
    lines = [f"Line {i}: {STORY}" for i in range(2)]
    interactive = [submit(loop, p, 12) for p in asks]
    background = [submit(loop, p, 6, background=True) for p in lines]
    for reply in interactive + background:
        done(reply)
    last_interactive = max(trace.admitted[p] for p in asks)
    assert all(trace.admitted[p] >= last_interactive for p in lines)
    assert trace.answering[lines[0]] > max(trace.answering[p] for p in asks)
    assert trace.background_held == 1 and trace.overlaps == 0
    assert loop.waiting == 0 and loop.running == 0


def test_a_cancelled_background_waiter_never_runs(loops: Callable[..., BatchLoop]) -> None:
    loop = loops(2)
    trace = Trace(loop)
    busy, gone, late, after = (f"{name}: {STORY}" for name in ("Busy", "Gone", "Late", "After"))  # fmt: skip
    replies: dict[str, Reply] = {busy: submit(loop, busy, 120, background=True)}

    def queue_behind() -> bool:  # background holds its one slot of two: these wait
        if not trace.answered(busy):
            return False
        replies[gone] = submit(loop, gone, 5, background=True)
        replies[gone].cancel.set()
        replies[late] = submit(loop, late, 5, background=True, deadline=0.0)
        replies[after] = submit(loop, after, 3, background=True)
        return True

    trace.triggers.append(queue_behind)
    done(replies[busy])
    done(replies[after])
    timed_out = replies[late]
    assert timed_out.done.wait(WAIT)
    assert isinstance(timed_out.end, ErrorEvent) and isinstance(timed_out.end.error, Timeout)
    assert gone not in trace.admitted and late not in trace.admitted
    assert not replies[gone].done.is_set() and replies[gone].text == ""
    assert loop.waiting == 0


@pytest.mark.anyio
async def test_batch_priority_makes_a_background_job(tmp_path: Path) -> None:
    path = bundled_gguf()
    assert path is not None
    store = ModelStore(tmp_path / "models")
    register_bundled(store, ModelName.parse("smollm2"), path)
    engine = LocalEngine(store, EngineSettings(num_thread=2))
    jobs: list[Job] = []

    async def generate(record: Any, request: ChatRequest, job: Job) -> AsyncIterator[Any]:
        jobs.append(job)
        return
        yield

    engine._generate = generate  # type: ignore[method-assign,assignment]
    request = ChatRequest(model="smollm2", messages=(Message(role="user", content="hi"),))
    priorities: tuple[Priority, ...] = ("interactive", "batch")
    for priority in priorities:
        async for _ in engine.chat(RequestContext(api="openai", priority=priority), request):
            pass
    assert [job.background for job in jobs] == [False, True]


def test_batch_lines_keep_off_a_conversation_s_cache(loops: Callable[..., BatchLoop]) -> None:
    """A slot an interactive request used last is the one background lines take only
    when no other is free, so the conversation's next turn still finds its prefix."""
    loop = loops(3)
    conversation = LONG[:1200]
    assert done(submit(loop, conversation + " First question?", 2)).metrics.cached_tokens == 0
    for i in range(6):  # one after another, two at a time: every slot but one gets reused
        pair = [submit(loop, f"{STORY} Line {i}.{k}", 3, background=True) for k in range(2)]
        for reply in pair:
            done(reply)
    again = done(submit(loop, conversation + " Second question?", 2))
    assert again.metrics.cached_tokens >= 3 * PREFIX_CHUNK
