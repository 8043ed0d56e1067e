"""The usage page in headless Chromium against a real server with access control on:
after some requests with an API key, the admin sees them counted, charted per day and
model and listed per model; switching to their own usage shows only theirs; limits and
budgets set in the page's forms are enforced at once; a bad entry shows the server's
message."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Server, start_server
from tests.ui.test_login import ADMIN_PASSWORD
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

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "LLMUX_AUTH__MODE": "on",
        "LLMUX_AUTH__SECRET": secrets.token_urlsafe(32),
        "LLMUX_AUTH__ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LLMUX_USAGE__FLUSH_S": "0.2",
        "LLMUX_PRICES__CURRENCY": "CNY",
        "LLMUX_PRICES__MODELS": '{"' + MODEL + '": {"input": 2.0, "output": 8.0}}',
    }
    srv = start_server(tmp_path_factory.mktemp("ui-usage"), extra_env=env)
    yield srv
    srv.stop()


@pytest.fixture()
def page(browser: Browser, problems: PageProblems) -> Iterator[Page]:  # noqa: F811
    p = new_page(browser, problems)
    problems.allow(r"status of 40[0-9]")  # the refused entry below, by design
    yield p
    p.context.close()
    assert problems.unexpected() == []


def test_usage_limits_and_budgets_in_the_page(page: Page, server: Server) -> None:
    page.goto(server.url + "/ui/login.html")
    page.get_by_test_id("login-name").fill("admin")
    page.get_by_test_id("login-password").fill(ADMIN_PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("account")).to_contain_text("admin")
    made = page.evaluate(
        """() => fetch('../api/keys', {method: 'POST', headers: {'Content-Type': 'application/json',
             'X-CSRF-Token': decodeURIComponent(document.cookie.split('; ')
               .find(c => c.startsWith('llmux_csrf=')).slice(11))},
             body: JSON.stringify({name: 'script'})}).then(r => r.json())"""
    )
    key = made["key"]
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        r = httpx.post(f"{server.url}/v1/chat/completions", json=BODY, headers=headers, timeout=120)
        assert r.status_code == 200, r.text

    # the page reads usage once: wait until the writer (flush_s 0.2) has all three
    for _ in range(50):
        done = httpx.get(f"{server.url}/api/usage", headers=headers, timeout=10).json()
        if done["total"]["requests"] == 3:
            break
        time.sleep(0.1)
    page.get_by_test_id("usage-link").click()
    expect(page).to_have_url(server.url + "/ui/usage.html")
    expect(page.get_by_test_id("summary")).to_contain_text("3 requests")
    bars = page.get_by_test_id("tokens-chart").locator(f'rect[data-model="{MODEL}"]')
    expect(bars).to_have_count(1)  # today, one model
    expect(page.get_by_test_id("cost-chart").locator("rect[data-model]")).to_have_count(1)
    expect(page.get_by_test_id("per-model")).to_contain_text(MODEL)
    expect(page.get_by_test_id("summary")).to_contain_text("CNY")
    # the admin's own usage (their session made no requests; the key is theirs too)
    page.get_by_test_id("whose").select_option("mine")
    expect(page.get_by_test_id("summary")).to_contain_text("3 requests")

    key_id = key.removeprefix("sk-llmux-").split("_")[0]
    page.get_by_test_id("limit-scope").fill(f"key:{key_id}")
    page.get_by_test_id("limit-rpm").fill("1")
    page.get_by_test_id("limit-save").click()
    expect(page.locator(f'#limits tr[data-scope="key:{key_id}"]')).to_contain_text("1")
    first = httpx.post(f"{server.url}/v1/chat/completions", json=BODY, headers=headers, timeout=120)
    second = httpx.post(
        f"{server.url}/v1/chat/completions", json=BODY, headers=headers, timeout=120
    )
    assert (first.status_code, second.status_code) == (200, 429)

    page.get_by_test_id("budget-scope").fill(f"key:{key_id}")
    page.get_by_test_id("budget-period").select_option("day")
    page.get_by_test_id("budget-amount").fill("0.000001")
    page.get_by_test_id("budget-save").click()
    expect(page.locator(f'#budgets tr[data-scope="key:{key_id}"]')).to_contain_text("0.000001")
    page.locator(f'#limits tr[data-scope="key:{key_id}"]').get_by_test_id("remove").click()
    expect(page.locator(f'#limits tr[data-scope="key:{key_id}"]')).to_have_count(0)
    broke = httpx.post(f"{server.url}/v1/chat/completions", json=BODY, headers=headers, timeout=120)
    assert broke.status_code == 402 and broke.json()["error"]["code"] == "insufficient_balance"

    page.get_by_test_id("limit-scope").fill("planet:mars")
    page.get_by_test_id("limit-rpm").fill("5")
    page.get_by_test_id("limit-save").click()
    expect(page.locator("#error")).to_contain_text("KIND:ID")
    page.get_by_test_id("whose").select_option("all")
    expect(page.get_by_test_id("summary")).to_contain_text("requests")
    screenshot(page, "ui-usage.png")
