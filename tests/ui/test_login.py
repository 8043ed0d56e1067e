"""The web UI with access control on, in headless Chromium against a real server: log
in, chat, create an API key and use it with curl, log out and be refused afterwards; a
form posted from another page (same site, other port) without the CSRF token is
refused even though the browser sends the session cookie."""

from __future__ import annotations

import http.server
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODEL, Server, free_port, start_server
from tests.ui.test_web_ui import (  # noqa: F401 - browser, problems: the fixtures
    SHORT,
    Browser,
    Page,
    PageProblems,
    browser,
    expect,
    new_page,
    problems,
    screenshot,
    wait_reply_done,
    with_options,
)

ADMIN_PASSWORD = "ui admin password"
NUMBERS = {"temperature": 0, "seed": 1, "num_predict": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "LLMUX_AUTH__MODE": "on",
        "LLMUX_AUTH__SECRET": secrets.token_urlsafe(32),
        "LLMUX_AUTH__ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LLMUX_ENGINE__KEEP_ALIVE": "30m",
    }
    srv = start_server(tmp_path_factory.mktemp("ui-auth"), extra_env=env)
    yield srv
    srv.stop()


@pytest.fixture()
def page(browser: Browser, problems: PageProblems) -> Iterator[Page]:  # noqa: F811
    p = new_page(browser, problems)
    # the server's 401s and 403s are expected here; the browser logs each as an error
    problems.allow(r"status of 40[13]")
    yield p
    p.context.close()
    assert problems.unexpected() == []


def log_in(page: Page, server: Server) -> None:
    page.goto(server.url + "/ui/")
    expect(page).to_have_url(server.url + "/ui/login.html?next=%2Fui%2F")
    page.get_by_test_id("login-name").fill("admin")
    page.get_by_test_id("login-password").fill("wrong password")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("wrong user name or password")
    page.get_by_test_id("login-password").fill(ADMIN_PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(server.url + "/ui/")
    expect(page.get_by_test_id("account")).to_contain_text("admin")


def curl(server: Server, key: str) -> str:
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {key}",
         f"{server.url}/api/tags"], capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout


def test_log_in_chat_make_a_key_log_out(page: Page, server: Server) -> None:
    log_in(page, server)
    expect(page.get_by_test_id("model-select").locator(f'option[value="{MODEL}"]')).to_have_count(1)
    with_options(page, SHORT)
    page.get_by_test_id("prompt-input").fill("Say hello.")
    page.get_by_test_id("prompt-input").press("Enter")
    reply = wait_reply_done(page)
    expect(reply.locator(".content")).not_to_be_empty()

    page.get_by_test_id("keys-link").click()
    expect(page).to_have_url(server.url + "/ui/keys.html")
    expect(page.get_by_test_id("admin")).to_be_visible()  # the admin sees users and keys
    page.get_by_test_id("key-name").fill("from the ui")
    page.get_by_test_id("key-create").click()
    expect(page.get_by_test_id("key-once")).to_be_visible()
    key = page.get_by_test_id("key-value").inner_text()
    assert key.startswith("sk-llmux-")
    expect(page.get_by_test_id("own-keys")).to_contain_text("from the ui")
    screenshot(page, "ui-keys.png")
    assert curl(server, key) == "200"

    page.goto(server.url + "/ui/")
    page.get_by_test_id("logout").click()
    expect(page).to_have_url(server.url + "/ui/login.html")
    status = page.evaluate("fetch('../api/conversations').then(r => r.status)")
    assert status == 401
    page.goto(server.url + "/ui/")
    expect(page).to_have_url(server.url + "/ui/login.html?next=%2Fui%2F")
    # the key lives on after the session that made it; revoked in the UI, it stops
    assert curl(server, key) == "200"


def test_a_key_revoked_in_the_ui_stops_working(page: Page, server: Server) -> None:
    log_in(page, server)
    page.goto(server.url + "/ui/keys.html")
    page.get_by_test_id("key-name").fill("short-lived")
    page.get_by_test_id("key-create").click()
    expect(page.get_by_test_id("key-once")).to_be_visible()
    key = page.get_by_test_id("key-value").inner_text()
    assert curl(server, key) == "200"
    key_id = key.removeprefix("sk-llmux-").split("_")[0]
    page.locator(f'tr[data-key-id="{key_id}"]').get_by_test_id("revoke").click()
    expect(page.locator(f'tr[data-key-id="{key_id}"]')).to_have_count(0)
    assert curl(server, key) == "401"


class _Forms(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        form = (
            f'<form id="f" method="post" action="{self.target}/api/conversations" '
            'enctype="text/plain"><input name=\'{"title": "forged", "x": "\' value=\'"}\'>'
            "</form><script>document.getElementById('f').submit()</script>"
        )
        body = f"<!doctype html><html><body>{form}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_cross_site_form_post_without_the_csrf_token_is_refused(
    page: Page,
    server: Server,
    problems: PageProblems,  # noqa: F811 - the fixture imported above
) -> None:
    problems.allow(r"status of 404")  # the browser asks the refusal's page for a favicon
    log_in(page, server)
    _Forms.target = server.url
    port = free_port()
    other = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Forms)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with page.expect_response(f"{server.url}/api/conversations") as answered:
            page.goto(f"http://127.0.0.1:{port}/")
        response = answered.value
        assert response.status == 403
        assert "CSRF" in response.text()
        # the browser did send the session: the refusal is the CSRF check's
        assert "llmux_session" in (response.request.header_value("cookie") or "")
    finally:
        other.shutdown()
    page.goto(server.url + "/ui/")
    titles = page.evaluate(
        "fetch('../api/conversations').then(r => r.json()).then(b => b.conversations.map(c => c.title))"
    )
    assert "forged" not in titles


def test_the_ui_api_needs_credentials(server: Server) -> None:
    assert httpx.get(f"{server.url}/api/conversations").status_code == 401
    assert httpx.get(f"{server.url}/ui/login.html").status_code == 200  # public
    assert httpx.get(f"{server.url}/ui/keys.js").status_code == 200


def admin_headers(server: Server) -> dict[str, str]:
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "llmux", "keys", "create", "--user", "admin", "--scopes", "admin"],
        env=server.env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {"Authorization": "Bearer " + done.stdout.strip().splitlines()[-1]}


def log_in_as(page: Page, server: Server, name: str, password: str) -> None:
    page.goto(server.url + "/ui/login.html")
    page.get_by_test_id("login-name").fill(name)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(server.url + "/ui/")
    expect(page.get_by_test_id("account")).to_contain_text(name)


def test_in_the_ui_one_user_never_sees_anothers_conversations(
    browser: Browser,  # noqa: F811 - the fixture imported above
    problems: PageProblems,  # noqa: F811
    server: Server,
) -> None:
    problems.allow(r"status of 40[134]")
    h = admin_headers(server)
    for name in ("alice", "bob"):
        r = httpx.post(f"{server.url}/admin/users", json={"name": name, "password": f"{name} pw 123"},
                       headers=h)  # fmt: skip
        assert r.status_code == 201, r.text
    alice, bob = new_page(browser, problems), new_page(browser, problems)
    try:
        ids = {}
        for page, name in ((alice, "alice"), (bob, "bob")):
            log_in_as(page, server, name, f"{name} pw 123")
            with_options(page, NUMBERS)
            page.get_by_test_id("prompt-input").fill(f"A note from {name}.")
            page.get_by_test_id("prompt-input").press("Enter")
            wait_reply_done(page)
            expect(page).to_have_url(re.compile(r"#.+"))
            ids[name] = page.evaluate("decodeURIComponent(location.hash.slice(1))")
        for page, me, other in ((alice, "alice", "bob"), (bob, "bob", "alice")):
            page.goto(server.url + "/ui/")
            listed = page.get_by_test_id("conversation-item")
            expect(listed).to_have_count(1)
            expect(listed).to_contain_text(f"note from {me}")
            page.goto(f"{server.url}/ui/#{ids[other]}")  # the other's conversation, by id
            page.reload()
            expect(page.locator("#error")).to_be_visible()
            expect(page.locator("#error-text")).to_contain_text("not found")
            expect(page.get_by_test_id("message-user")).to_have_count(0)
    finally:
        alice.context.close()
        bob.context.close()
    assert problems.unexpected() == []
