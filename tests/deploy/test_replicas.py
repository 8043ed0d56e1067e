"""Three ``llmux serve`` replicas on loopback (issue 19, point 5): one PostgreSQL
database, one Redis key prefix, one server secret, access control on with a bootstrap
admin, the bundled model. The three are started once for the module and shared by its
tests, in this order (the later ones restart and kill replicas):

1. a per-key limit of 6 requests a minute admits exactly 6 of 9 requests spread over
   the three, the rest get 429 with Retry-After; a budget that covers 3 requests admits
   exactly 3 of 9 (402 for the rest), and its ledger and every replica's balance agree;
2. a key revoked on one replica is refused by all three (a deadline-based poll; the
   one-second bound of ``[auth] cache_s`` itself is timed in tests/auth/test_replicas.py);
3. a conversation started on one replica continues on a second, whose prompt is the whole
   history, and reads back complete on the third;
4. a batch uploaded on one replica and created on another is worked by exactly one: one
   "working it" log line, one replica in the audit trail, one usage record per line;
5. a rolling restart (SIGTERM, then a new process on the same port) of all three under
   continuous streaming load loses no stream: every stream that got a 200 ends with
   ``[DONE]`` and a finish_reason; the rest were refused (503 or no connection) and left
   no usage or audit record; each drain flushed its usage and audit records;
6. SIGKILL of one replica mid-stream: the stream breaks, the client's retry on another
   replica succeeds, the other replicas' streams are untouched; after its restart, every
   request of this module that finished has exactly one usage record and one audit
   record, the killed one none, and the audit chains of all three verify.

Covered elsewhere and not repeated: floods of four replicas against request, token and
concurrency limits (tests/limits/test_flood.py), 200 concurrent requests on a budget
with a replica killed and reconcile (tests/limits/test_budget_replicas.py), the official
clients, OAuth2 and JWT across two replicas (tests/auth/test_replicas.py), 2,000-line
batches and a SIGKILL mid-batch (tests/batch/test_batches_e2e.py), SIGKILL under 8
threads and the audit trail (tests/audit/test_sigkill.py), one replica's drain under 20
streams (tests/server/test_drain.py), simultaneous migrations
(tests/storage/test_migration_race.py)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from llmux.config import load_settings
from tests.batch.test_batches import jsonl
from tests.conftest import MODEL, Server, fresh_pg_database, start_server
from tests.limits.conftest import redis_url  # noqa: F401 - the fixture, by name

T = TypeVar("T")
LONG = 300  # seconds a client waits for a reply: the machine may be busy
COUNT = [{"role": "user", "content": "Count to a hundred."}]
HI = [{"role": "user", "content": "Say hi."}]


# -- the cluster ---------------------------------------------------------------------------


@dataclass
class Cluster:
    servers: list[Server]
    env: dict[str, str]  # what starts a replica (again)
    config: Path
    pg: str
    admin: str = ""
    finished: set[str] = field(default_factory=set)  # request ids answered completely
    refused: set[str] = field(default_factory=set)  # request ids never accepted

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin}"}

    def key(self, scopes: str) -> tuple[str, str]:
        """A new key of the admin user, made on the first replica: (its text, its id)."""
        r = httpx.post(f"{self.urls[0]}/admin/keys", json={"user": "admin", "scopes": scopes},
                       headers=self.auth(), timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        text = r.json()["key"]
        return text, text.removeprefix("sk-llmux-").split("_")[0]

    def start(self, home: Path, port: int | None = None) -> Server:
        return start_server(home, extra_env=self.env, port=port)

    def restart(self, i: int) -> Server:
        """Replica ``i`` started again on its home and port, once its process has exited."""
        old = self.servers[i]
        assert old.proc.poll() is not None
        # its log is kept beside: the new process's log takes its name
        n = len(list(old.log.parent.glob(f"{old.log.stem}.*.log")))
        old.log.rename(old.log.with_name(f"{old.log.stem}.{n}.log"))
        self.servers[i] = self.start(old.home, port=int(old.url.rsplit(":", 1)[1]))
        return self.servers[i]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,  # noqa: F811 - the fixture, by name
) -> Iterator[Cluster]:
    db = fresh_pg_database("llmux_three")
    pg = next(db)
    config = tmp_path_factory.mktemp("three") / "llmux.toml"
    config.write_text(
        textwrap.dedent(f"""
        [auth]
        mode = "on"
        secret = "{secrets.token_urlsafe(32)}"
        admin_password = "three replicas admin password"
        max_failures = 10000  # the revocation test's 401s all come from 127.0.0.1
        [storage]
        database_url = "{pg}"
        [redis]
        url = "{redis_url}"
        prefix = "llmux-test:{uuid.uuid4().hex[:10]}:"
        [limits]
        refresh_s = 0.5
        [usage]
        flush_s = 0.2
        [batch]
        lease_s = 10.0  # no replica dies while a batch runs: no takeover on a busy machine
        check_s = 1.0
        poll_s = 0.3
        [prices]
        currency = "CNY"
        [prices.models."{MODEL}"]
        input = 1.0   # one micro-yuan per prompt token
        output = 0.0
    """)
    )
    env = {
        "LLMUX_CONFIG": str(config),
        "LLMUX_ENGINE__KEEP_ALIVE": "30m",
        "LLMUX_SERVER__DRAIN_S": "120",  # longer than any stream here takes: nothing is cut
        "LLMUX_ENGINE__NUM_THREAD": "1",  # three engines on a small machine: no oversubscription
    }
    made = Cluster([], env, config, pg)
    homes = [tmp_path_factory.mktemp(f"replica-{i}") for i in range(3)]
    # all three start at once on the empty database: one migrates it (the others wait for
    # its lock) and they race to make the bootstrap admin, which one of them wins
    try:
        with ThreadPoolExecutor(3) as pool:
            for started in [pool.submit(made.start, home) for home in homes]:
                made.servers.append(started.result())
        done = subprocess.run(
            [sys.executable, "-m", "llmux", "keys", "create", "--user", "admin", "--scopes",
             "inference models:read conversations batch admin"],
            env=made.servers[0].env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        made.admin = done.stdout.strip().splitlines()[-1]
        yield made
    finally:
        for s in made.servers:
            s.stop()
        next(db, None)


# -- helpers ---------------------------------------------------------------------------------


def until(what: str, check: Callable[[], T], within: float = 60.0, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something true (a deadline, not a timing test)."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        time.sleep(every)


def query(pg: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(pg.replace("postgresql://", "postgres://"), timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def usage_counts(pg: str, ids: set[str]) -> Counter[str]:
    rows = query(pg, "SELECT request_id FROM usage_records WHERE request_id = ANY($1::text[])",
                 sorted(ids))  # fmt: skip
    return Counter(r["request_id"] for r in rows)


def audit_counts(pg: str, ids: set[str]) -> Counter[str]:
    rows = query(pg, "SELECT request_id FROM audit_log WHERE kind = 'model' AND "
                 "request_id = ANY($1::text[])", sorted(ids))  # fmt: skip
    return Counter(r["request_id"] for r in rows)


def all_recorded(pg: str, ids: set[str], counts: Callable[[str, set[str]], Counter[str]]) -> Counter[str]:  # fmt: skip
    """Once every one of ``ids`` has a record: how many each has."""
    if not ids:
        return Counter()
    found: Counter[str] = until(
        f"records of {len(ids)} request(s)", lambda: (c := counts(pg, ids)).keys() >= ids and c
    )
    return found


def chat(messages: list[dict[str, str]], max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages, "max_tokens": max_tokens, **extra}


def post_all(cluster: Cluster, body: dict[str, Any], key: str, n: int) -> list[httpx.Response]:
    """``n`` requests at once, spread round-robin over the replicas."""
    urls = cluster.urls

    def one(i: int) -> httpx.Response:
        return httpx.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body,
                          headers=cluster.auth(key), timeout=LONG)  # fmt: skip

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@dataclass
class Outcome:
    """One streaming request: ``status`` None when no response came (the connection was
    refused or closed before one), ``broken`` when the stream failed after its 200."""

    rid: str
    url: str
    status: int | None = None
    lines: list[str] = field(default_factory=list)
    broken: str | None = None
    retry_after: str | None = None
    at: float = 0.0  # when it ended

    @property
    def complete(self) -> bool:
        """A normal end: ``[DONE]`` after a finish_reason, no error event."""
        if self.status != 200 or self.broken or not self.lines or self.lines[-1] != "data: [DONE]":  # fmt: skip
            return False
        chunks = [json.loads(x[6:]) for x in self.lines[:-1] if x.startswith("data: {")]
        ends = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
        return not any("error" in c for c in chunks) and bool(ends) and ends[-1] in ("length", "stop")  # fmt: skip

    def tail(self) -> str:
        return f"{self.rid} at {self.url}: {self.status} {self.broken} {self.lines[-2:]}"


def stream(
    http: httpx.Client, url: str, body: dict[str, Any], rid: str, headers: dict[str, str],
    first: Callable[[], None] | None = None,
) -> Outcome:  # fmt: skip
    """A streaming chat completion read to its end; ``first`` is called on its first line."""
    out = Outcome(rid, url)
    try:
        with http.stream("POST", f"{url}/v1/chat/completions", json=body,
                         headers={**headers, "X-Request-Id": rid}) as r:  # fmt: skip
            out.status = r.status_code
            out.retry_after = r.headers.get("retry-after")
            try:
                for line in r.iter_lines():
                    if line:
                        out.lines.append(line)
                        if first is not None and len(out.lines) == 1:
                            first()
            except httpx.HTTPError as exc:  # after the 200: the stream broke
                out.broken = f"{type(exc).__name__}: {exc}"
    except httpx.HTTPError:
        pass  # no response at all: refused, never accepted
    out.at = time.monotonic()
    return out


# -- 1. limits and budgets hold across the three ----------------------------------------------


def test_a_key_limit_and_a_budget_hold_across_three_replicas(cluster: Cluster) -> None:
    admin = cluster.auth()
    key, key_id = cluster.key("inference")
    r = httpx.put(f"{cluster.urls[0]}/admin/limits/key:{key_id}",
                  json={"requests_per_minute": 6}, headers=admin, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    for url in cluster.urls:  # each replica's own copy of the limits has it
        until(f"the limit on {url}", lambda url=url: any(
            q["scope"] == f"key:{key_id}" and q["requests_per_minute"] == 6
            for q in httpx.get(f"{url}/admin/limits", headers=admin, timeout=30).json()["limits"]
        ))  # fmt: skip
    answers = post_all(cluster, chat(HI, 1), key, 9)  # all admitted or refused at once
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 6 + [429] * 3, [(a.status_code, a.text[:200]) for a in answers]
    for a in answers:
        assert a.headers["x-ratelimit-limit-requests"] == "6"
        if a.status_code == 429:
            assert 1 <= int(a.headers["retry-after"]) <= 60
            assert a.json()["error"]["code"] == "rate_limited"

    # a budget that covers three requests; the replicas' engines are warm, so each
    # request holds exactly its prompt's cost (prompt tokens are priced, output is free)
    body = chat(HI, 1, temperature=0)
    warm = post_all(cluster, body, cluster.admin, 3)
    assert {w.status_code for w in warm} == {200}, [w.text[:200] for w in warm]
    costs = {w.json()["usage"]["prompt_tokens"] for w in warm}
    assert len(costs) == 1, costs  # the same model counts the same prompt the same
    cost = costs.pop()
    buyer, buyer_id = cluster.key("inference")
    amount = f"0.{3 * cost:06d}"  # three requests' worth, in micro-yuan
    r = httpx.post(f"{cluster.urls[1]}/admin/budgets", headers=admin, timeout=30,
                   json={"scope": f"key:{buyer_id}", "period": "day", "amount": amount})  # fmt: skip
    assert r.status_code == 201, r.text
    for url in cluster.urls:  # the balance comes from each replica's own copy of the budgets
        until(f"the budget on {url}", lambda url=url: httpx.get(
            f"{url}/user/balance", headers=cluster.auth(buyer), timeout=30
        ).json()["balance_infos"][0]["total_balance"] == amount)  # fmt: skip
    answers = post_all(cluster, body, buyer, 9)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 3 + [402] * 6, [(a.status_code, a.text[:200]) for a in answers]
    for a in answers:
        if a.status_code == 402:
            assert a.json()["error"]["code"] == "insufficient_balance"
            assert a.headers["x-should-retry"] == "false"
    spent = until("the ledger has the three requests", lambda: [
        b["spent_micros"] for b in httpx.get(f"{cluster.urls[2]}/admin/budgets", headers=admin,
                                             timeout=30).json()["budgets"]
        if b["scope"] == f"key:{buyer_id}" and b["spent_micros"] == 3 * cost
    ])  # fmt: skip
    assert spent == [3 * cost]
    for url in cluster.urls:
        balance = httpx.get(f"{url}/user/balance", headers=cluster.auth(buyer), timeout=30).json()
        assert balance["is_available"] is False, (url, balance)


# -- 2. a key revoked on one is refused by all ---------------------------------------------------


def test_a_key_revoked_on_one_replica_is_refused_by_all_three(cluster: Cluster) -> None:
    cache_s = load_settings(cluster.config).auth.cache_s
    key, key_id = cluster.key("models:read")
    h = cluster.auth(key)
    for url in cluster.urls:  # known and cached on every replica
        assert httpx.get(f"{url}/api/tags", headers=h, timeout=30).status_code == 200
    a, *others = cluster.urls
    r = httpx.delete(f"{a}/admin/keys/{key_id}", headers=cluster.auth(), timeout=30)
    assert r.status_code == 204, r.text
    assert httpx.get(f"{a}/api/tags", headers=h, timeout=30).status_code == 401  # at once
    for url in others:  # within cache_s; the deadline only guards against a hang
        until(f"{url} refuses the revoked key", lambda url=url: httpx.get(
            f"{url}/api/tags", headers=h, timeout=30).status_code == 401,
            within=cache_s + 60, every=0.2)  # fmt: skip
    for url in cluster.urls:  # and it stays refused
        r = httpx.post(f"{url}/v1/chat/completions", json=chat(HI, 1), headers=h, timeout=30)
        assert r.status_code == 401, r.text


# -- 3. a conversation moves between replicas ----------------------------------------------------


def test_a_conversation_started_on_one_replica_continues_on_another(cluster: Cluster) -> None:
    a, b, c = cluster.urls
    h = cluster.auth()
    made = httpx.post(f"{a}/api/conversations", json={"model": MODEL}, headers=h, timeout=30)
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    turn = {"content": "Name a colour.", "options": {"num_predict": 4}}
    first = httpx.post(f"{a}/api/conversations/{cid}/messages", json={**turn, "stream": False},
                       headers=h, timeout=LONG)  # fmt: skip
    assert first.status_code == 200, first.text
    one = first.json()
    assert one["stored"] is True and one["conversation_id"] == cid
    with httpx.stream("POST", f"{b}/api/conversations/{cid}/messages", json=turn, headers=h,
                      timeout=LONG) as r:  # fmt: skip
        assert r.status_code == 200, r.read()
        lines = [json.loads(x) for x in r.iter_lines() if x]
    last = lines[-1]
    assert last["done"] is True and last["stored"] is True and last["conversation_id"] == cid
    stored = httpx.get(f"{c}/api/conversations/{cid}", headers=h, timeout=30).json()
    messages = stored["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [messages[1]["id"], messages[3]["id"]] == [one["message_id"], last["message_id"]]
    assert messages[1]["content"] == one["message"]["content"]
    assert messages[3]["content"] == "".join(x["message"]["content"] for x in lines)
    assert not any(m["partial"] for m in messages)
    # b's prompt was the whole conversation, a's turn included: the same count as the
    # three messages sent by hand
    by_hand = [{"role": m["role"], "content": m["content"]} for m in messages[:3]]
    usage = httpx.post(f"{c}/v1/chat/completions", json=chat(by_hand, 1), headers=h,
                       timeout=LONG).json()["usage"]  # fmt: skip
    assert messages[3]["usage"]["prompt_tokens"] == usage["prompt_tokens"]
    assert messages[1]["usage"]["prompt_tokens"] < usage["prompt_tokens"]


# -- 4. a batch is worked by exactly one ---------------------------------------------------------


def test_a_batch_is_worked_by_exactly_one_replica(cluster: Cluster) -> None:
    sdks = [openai.OpenAI(base_url=f"{url}/v1", api_key=cluster.admin, max_retries=0, timeout=60)
            for url in cluster.urls]  # fmt: skip
    lines = [{"custom_id": f"three-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": chat([{"role": "user", "content": f"label {i}"}], 2)} for i in range(4)]  # fmt: skip
    source = sdks[0].files.create(file=("in.jsonl", jsonl(*lines)), purpose="batch")
    batch = sdks[1].batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")  # fmt: skip
    done = until("the batch completes", lambda: (
        b if (b := sdks[2].batches.retrieve(batch.id)).status in ("completed", "failed") else None
    ), within=LONG, every=0.2)  # fmt: skip
    assert done.status == "completed", done
    out = [json.loads(x) for x in sdks[2].files.content(done.output_file_id or "").read().splitlines()]  # fmt: skip
    assert sorted(x["custom_id"] for x in out) == sorted(x["custom_id"] for x in lines)
    assert {x["response"]["status_code"] for x in out} == {200}
    ids = {x["response"]["request_id"] for x in out}
    assert len(ids) == 4
    workers = [s.url for s in cluster.servers if f"batch {batch.id}: working it" in s.log.read_text()]  # fmt: skip
    assert len(workers) == 1, workers
    usage = all_recorded(cluster.pg, ids, usage_counts)
    assert usage == dict.fromkeys(ids, 1), usage  # each line's record, once
    routes = query(cluster.pg, "SELECT route, count(*) AS n FROM usage_records WHERE "
                   "request_id = ANY($1::text[]) GROUP BY route", sorted(ids))  # fmt: skip
    assert [(r["route"], r["n"]) for r in routes] == [("/v1/chat/completions", 4)]
    all_recorded(cluster.pg, ids, audit_counts)
    replicas = query(cluster.pg, "SELECT DISTINCT replica FROM audit_log WHERE kind = 'model' "
                     "AND request_id = ANY($1::text[])", sorted(ids))  # fmt: skip
    assert len(replicas) == 1, replicas  # every line ran on the same replica


# -- 5. a rolling restart under streaming load ---------------------------------------------------


class Load:
    """Clients that stream chat completions until stopped: each sends its next request
    to the next replica, so one that is refused (503, or no connection) goes on to the
    next one. Every attempt has its own X-Request-Id."""

    def __init__(self, cluster: Cluster, body: dict[str, Any], clients: int) -> None:
        self.cluster, self.body = cluster, body
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,)) for n in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=LONG)

    def client(self, n: int) -> None:
        urls, headers = self.cluster.urls, self.cluster.auth()  # the ports stay the same
        with httpx.Client(timeout=httpx.Timeout(LONG, connect=10)) as http:
            i = 0
            while not self.stop.is_set():
                url = urls[(n + i) % len(urls)]
                self.outcomes.append(stream(http, url, self.body, f"roll-{n}-{i}", headers))
                i += 1
                if self.outcomes[-1].status != 200:
                    time.sleep(0.05)  # refused: on to the next replica

    def served(self, url: str, since: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.url == url and o.status == 200 and o.at > since]  # fmt: skip

    def refused(self, url: str, since: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.url == url and o.status is None and o.at > since]  # fmt: skip


def drained(log: str) -> tuple[int, int]:
    found = re.search(r"drained: (\d+) request\(s\) finished, (\d+) cut", log)
    assert found is not None, log[-3000:]
    return int(found[1]), int(found[2])


@pytest.mark.timeout(900)  # under a minute on a quiet machine; several on a busy one
def test_a_rolling_restart_under_streaming_load_loses_no_stream(
    cluster: Cluster, no_eos: dict[str, int]
) -> None:
    short = chat(COUNT, 8, logit_bias=no_eos, stream=True)  # each runs to max_tokens
    long = chat(COUNT, 48, logit_bias=no_eos, stream=True)
    longs: list[Outcome] = []
    with Load(cluster, short, clients=3) as load, httpx.Client(timeout=LONG) as http:
        began = time.monotonic()
        for url in cluster.urls:
            until(f"{url} serves the load", lambda url=url: load.served(url, began), within=LONG)
        for i, url in enumerate(cluster.urls):
            old = cluster.servers[i]
            started = threading.Event()
            with ThreadPoolExecutor(1) as pool:  # a long stream runs when the signal comes
                future = pool.submit(stream, http, url, long, f"roll-long-{i}", cluster.auth(),
                                     started.set)  # fmt: skip
                assert started.wait(LONG), future.result().tail()
                old.proc.send_signal(signal.SIGTERM)
                assert old.proc.wait(timeout=LONG) == 0
                gone = time.monotonic()
                longs.append(future.result(timeout=LONG))
            assert longs[-1].complete, longs[-1].tail()
            finished, cut_there = drained(old.log.read_text())  # before the new one's log
            assert cut_there == 0 and finished >= 1
            # what the drain served is recorded before the process exited
            assert usage_counts(cluster.pg, {longs[-1].rid}) == {longs[-1].rid: 1}
            assert audit_counts(cluster.pg, {longs[-1].rid}) == {longs[-1].rid: 1}
            until(
                f"a client refused at {url}",
                lambda url=url, gone=gone: load.refused(url, gone),
                within=LONG,
            )
            back = time.monotonic()
            cluster.restart(i)  # on the same port: the clients find it again
            until(f"{url} serves again", lambda url=url, back=back: load.served(url, back),
                  within=LONG)  # fmt: skip
    outcomes = load.outcomes + longs
    cut = [o.tail() for o in outcomes if o.status == 200 and not o.complete]
    assert not cut, cut
    assert {o.status for o in outcomes} <= {200, 503, None}, Counter(o.status for o in outcomes)
    assert all(o.retry_after == "1" for o in outcomes if o.status == 503)
    served = {o.rid for o in outcomes if o.status == 200}
    never = {o.rid for o in outcomes if o.status != 200}
    cluster.finished |= served
    cluster.refused |= never
    usage = all_recorded(cluster.pg, served, usage_counts)
    assert {rid for rid, n in usage.items() if n != 1} == set()
    assert usage_counts(cluster.pg, never) == {}  # a refused request never ran
    audit = all_recorded(cluster.pg, served, audit_counts)
    assert {rid for rid, n in audit.items() if n != 1} == set()
    assert audit_counts(cluster.pg, never) == {}


# -- 6. SIGKILL mid-stream ----------------------------------------------------------------------


def test_sigkill_mid_stream_the_retry_succeeds_and_records_stay_consistent(
    cluster: Cluster, no_eos: dict[str, int]
) -> None:
    # what finished before is in the ledger: a kill may lose only what is still queued
    all_recorded(cluster.pg, cluster.finished, usage_counts)
    x, y, z = cluster.urls
    h = cluster.auth()
    short = chat(COUNT, 8, logit_bias=no_eos, stream=True)
    long = chat(COUNT, 48, logit_bias=no_eos, stream=True)
    victim = cluster.servers[0]
    with ThreadPoolExecutor(2) as pool, httpx.Client(timeout=httpx.Timeout(LONG, connect=10)) as http:  # fmt: skip

        def others(n: int) -> list[Outcome]:  # streams on the other two meanwhile
            with httpx.Client(timeout=LONG) as own:
                return [stream(own, (y, z)[(n + i) % 2], short, f"kill-other-{n}-{i}", h)
                        for i in range(3)]  # fmt: skip

        side = [pool.submit(others, n) for n in range(2)]
        broken = stream(http, x, long, "kill-victim", h, lambda: victim.proc.send_signal(signal.SIGKILL))  # fmt: skip
        assert broken.status == 200 and not broken.complete, broken.tail()
        retry = stream(http, y, long, "kill-victim-retry", h)
        assert retry.complete, retry.tail()
        beside = [o for f in side for o in f.result(timeout=LONG)]
    assert all(o.complete for o in beside), [o.tail() for o in beside if not o.complete]
    assert victim.proc.wait(timeout=60) == -signal.SIGKILL
    cluster.restart(0)  # on its home: its audit spool goes on, and drains
    cluster.finished |= {retry.rid} | {o.rid for o in beside}
    usage = all_recorded(cluster.pg, cluster.finished, usage_counts)
    assert {rid for rid, n in usage.items() if n != 1} == set()
    audit = all_recorded(cluster.pg, cluster.finished, audit_counts)
    assert {rid for rid, n in audit.items() if n != 1} == set()
    assert usage_counts(cluster.pg, {broken.rid}) == {}  # it never finished
    assert audit_counts(cluster.pg, {broken.rid}) == {}
    assert usage_counts(cluster.pg, cluster.refused) == {}
    report = httpx.get(f"{z}/admin/audit/verify", headers=h, timeout=60).json()
    assert report["ok"], report
    assert len(report["replicas"]) == 3, [r["replica"] for r in report["replicas"]]
    assert sum(r["rows"] for r in report["replicas"]) >= len(cluster.finished)
