"""The batches page in headless Chromium against a real server with access control on:
the owner sees a finished batch with its counts, progress and output link (the download
goes through /v1/files with the page's session), and a running one with a Cancel button
that cancels it; another user sees none of them. No assertion reads what the model
wrote."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmux.client import Client
from tests.conftest import MODEL, Server, start_server
from tests.ui.test_login import ADMIN_PASSWORD, admin_headers
from tests.ui.test_web_ui import (  # noqa: F401 - browser, problems: the fixtures
    Browser,
    Page,
    PageProblems,
    browser,
    expect,
    new_page,
    problems,
    screenshot,
)

BATCH_TIMEOUT = 120_000  # ms: the page refreshes every few seconds while a batch runs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "LLMUX_AUTH__MODE": "on",
        "LLMUX_AUTH__SECRET": secrets.token_urlsafe(32),
        "LLMUX_AUTH__ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LLMUX_ENGINE__KEEP_ALIVE": "30m",
    }
    srv = start_server(tmp_path_factory.mktemp("ui-batches"), extra_env=env)
    yield srv
    srv.stop()


@pytest.fixture()
def page(browser: Browser, problems: PageProblems) -> Iterator[Page]:  # noqa: F811
    p = new_page(browser, problems, accept_downloads=True)
    problems.allow(r"status of 404")  # another user's file, below, by design
    yield p
    p.context.close()
    assert problems.unexpected() == []


def requests_file(ids: list[str], max_tokens: int, **body: object) -> bytes:
    lines = []
    for i in ids:
        payload = {"model": MODEL, "max_tokens": max_tokens, **body,
                   "messages": [{"role": "user", "content": f"Label ticket {i}."}]}  # fmt: skip
        lines.append({"custom_id": i, "method": "POST", "url": "/v1/chat/completions", "body": payload})  # fmt: skip
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def log_in(page: Page, server: Server, name: str, password: str) -> None:
    page.goto(server.url + "/ui/login.html")
    page.get_by_test_id("login-name").fill(name)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("account")).to_contain_text(name)


def own_key(page: Page) -> str:
    """A key of the signed-in user, made through the page's session."""
    made = page.evaluate(
        """() => fetch('../api/keys', {method: 'POST', headers: {'Content-Type': 'application/json',
             'X-CSRF-Token': decodeURIComponent(document.cookie.split('; ')
               .find(c => c.startsWith('llmux_csrf=')).slice(11))},
             body: JSON.stringify({name: 'batches'})}).then(r => r.json())"""
    )
    return str(made["key"])


@pytest.mark.model
def test_the_owner_sees_progress_downloads_and_cancels(
    page: Page,
    browser: Browser,  # noqa: F811
    problems: PageProblems,  # noqa: F811
    server: Server,
    no_eos: dict[str, int],
    tmp_path: Path,
) -> None:
    log_in(page, server, "admin", ADMIN_PASSWORD)
    with Client(server.url, api_key=own_key(page)) as sdk:
        small = sdk.files.create(requests_file(["a", "b", "c"], 4), filename="small.jsonl")
        finished = sdk.batches.wait(sdk.batches.create(small.id).id, poll=0.2)
        assert finished.status == "completed" and finished.output_file_id
        output_name = sdk.files.get(finished.output_file_id).filename
        long = sdk.files.create(requests_file([f"l{i}" for i in range(24)], 400, logit_bias=no_eos))  # fmt: skip
        running = sdk.batches.create(long.id, metadata={"team": "qa"})
        while sdk.batches.get(running.id).status == "validating":
            time.sleep(0.05)

    page.get_by_test_id("batches-link").click()
    expect(page).to_have_url(server.url + "/ui/batches.html")
    rows = page.get_by_test_id("batches").locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-batch-id", running.id)  # newest first
    done = page.locator(f'tr[data-batch-id="{finished.id}"]')
    expect(done.get_by_test_id("batch-status")).to_have_text("completed")
    expect(done.get_by_test_id("batch-done")).to_have_text("3/3")
    expect(done.get_by_test_id("batch-progress")).to_have_attribute("value", "3")
    expect(done.get_by_test_id("batch-completed")).to_have_text("3")
    expect(done.get_by_test_id("batch-failed")).to_have_text("0")
    expect(done.get_by_test_id("batch-error-file")).to_have_count(0)
    expect(done.get_by_test_id("batch-cancel")).to_have_count(0)
    link = done.get_by_test_id("batch-output")
    expect(link).to_have_attribute("href", re.compile(f"/v1/files/{finished.output_file_id}/content$"))  # fmt: skip
    with page.expect_download() as got:
        link.click()
    assert got.value.suggested_filename == output_name
    saved = tmp_path / "downloaded.jsonl"
    got.value.save_as(saved)
    assert sorted(json.loads(x)["custom_id"] for x in saved.read_text().splitlines()) == ["a", "b", "c"]  # fmt: skip

    live = page.locator(f'tr[data-batch-id="{running.id}"]')
    expect(live).to_contain_text("team=qa")
    expect(live.get_by_test_id("batch-done")).to_contain_text("/24")
    screenshot(page, "ui-batches.png")
    live.get_by_test_id("batch-cancel").click()
    expect(live).to_have_attribute("data-status", "cancelled", timeout=BATCH_TIMEOUT)
    expect(live.get_by_test_id("batch-cancel")).to_have_count(0)
    expect(page.get_by_test_id("batches-summary")).to_have_text("2 batches")

    # another user sees none of it, and cannot read the owner's output by its id
    r = httpx.post(f"{server.url}/admin/users", json={"name": "bob", "password": "bob pw 123"},
                   headers=admin_headers(server))  # fmt: skip
    assert r.status_code == 201, r.text
    bob = new_page(browser, problems)
    try:
        log_in(bob, server, "bob", "bob pw 123")
        bob.goto(server.url + "/ui/batches.html")
        expect(bob.get_by_test_id("batches-summary")).to_have_text("No batches yet.")
        expect(bob.get_by_test_id("batches").locator("tbody tr")).to_have_count(0)
        status = bob.evaluate(f"fetch('../v1/files/{finished.output_file_id}/content').then(r => r.status)")  # fmt: skip
        assert status == 404
    finally:
        bob.context.close()
