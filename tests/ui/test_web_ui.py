"""The web chat UI at /ui, driven in headless Chromium against a real llmux server.

Debian's /usr/bin/chromium through the Python ``playwright`` package (no downloaded
browsers). Generation options that the UI does not expose (temperature, length) are
added to the UI's own requests by a request route, so replies are short, or, for the
stop test, long, and the same on every run.

Screenshots land in test-artifacts/; with LLMUX_UI_DOCS_SCREENSHOTS=1 they are also
copied to docs/images/ for docs/ui.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, MODEL, Server

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    # CI installs Chromium and sets this: there a missing browser is a failure
    assert os.environ.get("LLMUX_TEST_REQUIRE_BROWSER") != "1", f"{CHROMIUM} is missing"
    pytest.skip(
        "headless Chromium is not installed (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
Browser = sync_api.Browser
Page = sync_api.Page
Route = sync_api.Route
expect = sync_api.expect

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SHORT = {"temperature": 0, "seed": 1, "num_predict": 160}
LONG = {"temperature": 0, "seed": 1, "num_predict": 1500}
GENERATION_TIMEOUT = 120_000  # ms: the first reply also loads the model


# ---- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class PageProblems:
    """Console errors and uncaught exceptions of one page; ``allow`` expected ones."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [s for s in self.seen if not any(p.search(s) for p in self.allowed)]


@pytest.fixture()
def problems() -> PageProblems:
    return PageProblems()


def new_page(browser: Browser, problems: PageProblems, **context: Any) -> Page:
    ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 860}, **context})
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    page.on(
        "console",
        lambda m: problems.seen.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.seen.append(f"pageerror: {e}"))
    return page


@pytest.fixture()
def page(browser: Browser, problems: PageProblems) -> Iterator[Page]:
    p = new_page(browser, problems)
    yield p
    p.context.close()
    assert problems.unexpected() == []


@pytest.fixture()
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


# ---- helpers -----------------------------------------------------------------


def with_options(page: Page, options: dict[str, Any]) -> None:
    """Add generation ``options`` to the UI's message and regenerate requests."""

    def add(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        body["options"] = options
        route.continue_(post_data=json.dumps(body))

    page.route(re.compile(r"/api/conversations/[^/]+/(messages|regenerate)$"), add)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("LLMUX_UI_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)


def record_reply_lengths(page: Page) -> None:
    """Log the assistant text length at every DOM change into ``window.__lengths``."""
    page.evaluate(
        """() => {
          window.__lengths = [];
          const thread = document.getElementById("thread");
          new MutationObserver(() => {
            const replies = thread.querySelectorAll('[data-testid="message-assistant"] .content');
            const last = replies[replies.length - 1];
            if (last) window.__lengths.push(last.textContent.length);
          }).observe(thread, { childList: true, subtree: true, characterData: true });
        }"""
    )


def wait_reply_done(page: Page) -> Any:
    reply = page.get_by_test_id("message-assistant").last
    expect(reply).to_be_visible(timeout=GENERATION_TIMEOUT)
    expect(reply).not_to_have_attribute("aria-busy", "true", timeout=GENERATION_TIMEOUT)
    return reply


def conversation(api: httpx.Client, cid: str) -> dict[str, Any]:
    r = api.get(f"/api/conversations/{cid}")
    r.raise_for_status()
    return dict(r.json())


def open_ui(page: Page, server: Server) -> None:
    page.goto(server.url + "/ui")
    expect(page).to_have_url(server.url + "/ui/")
    expect(page.get_by_test_id("model-select").locator(f'option[value="{MODEL}"]')).to_have_count(1)


def current_id(page: Page) -> str:
    return str(page.evaluate("decodeURIComponent(location.hash.slice(1))"))


# ---- tests -------------------------------------------------------------------


def test_ui_assets_are_served(api: httpx.Client) -> None:
    r = api.get("/ui")
    assert r.status_code == 308 and r.headers["location"].endswith("/ui/")
    index = api.get("/ui/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in index.headers["content-security-policy"]
    for path, kind in [
        ("app.js", "javascript"),
        ("style.css", "text/css"),
        ("vendor/marked.esm.js", "javascript"),
        ("icon.svg", "image/svg+xml"),
    ]:
        r = api.get(f"/ui/{path}")
        assert r.status_code == 200 and kind in r.headers["content-type"], path
        again = api.get(f"/ui/{path}", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304, path
    assert api.get("/ui/nope.js").status_code == 404
    assert api.get("/ui/vendor/").status_code == 404
    assert api.get("/ui/..%2F..%2Fapp.py").status_code == 404
    assert api.get("/ui/%2e%2e/routes/ui.py").status_code == 404
    assert api.get("/").text == "Ollama is running"


def test_chat_streams_renders_and_comes_back(page: Page, server: Server, api: httpx.Client) -> None:
    for title in ("Packing list for a weekend hike", "SQL joins, explained"):
        # other conversations, so the list (and the screenshot) is not empty
        api.post("/api/conversations", json={"title": title, "model": MODEL}).raise_for_status()
    open_ui(page, server)
    options = page.get_by_test_id("model-select").locator("option").all_inner_texts()
    assert MODEL in options

    page.get_by_test_id("new-chat").click()
    prompt = page.get_by_test_id("prompt-input")
    expect(prompt).to_be_focused()
    expect(page.get_by_test_id("message-user")).to_have_count(0)

    # Shift+Enter is a new line, not a send
    prompt.type("first line")
    prompt.press("Shift+Enter")
    prompt.type("second line")
    assert prompt.input_value() == "first line\nsecond line"
    expect(page.get_by_test_id("message-user")).to_have_count(0)

    with_options(page, SHORT)
    record_reply_lengths(page)
    question = "How do I reverse a list in Python? Show an example."
    prompt.fill(question)
    prompt.press("Enter")

    expect(page.get_by_test_id("message-user")).to_have_text(question)
    expect(page.get_by_test_id("stop-button")).to_be_visible()
    reply = wait_reply_done(page)
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    expect(page.get_by_test_id("send-button")).to_be_visible()
    expect(prompt).to_have_value("")
    expect(prompt).to_be_focused()

    # streamed: the text grew over several renders
    lengths = [n for n in page.evaluate("window.__lengths") if n > 0]
    assert len(set(lengths)) >= 3, lengths
    assert lengths == sorted(lengths)
    # rendered as Markdown: block elements, not raw text
    content = reply.locator(".content")
    assert content.inner_text().strip()
    assert content.locator("p, pre, ul, ol, h1, h2, h3").count() >= 1
    code = content.locator(".code-block")
    if code.count():  # highlighted code block with a copy button
        expect(code.first.locator("code.hljs")).to_be_visible()
        expect(code.first.get_by_test_id("copy-code")).to_be_visible()
    page.mouse.move(900, 600)  # no hover effects in the screenshot
    screenshot(page, "ui-chat.png")

    cid = current_id(page)
    stored = conversation(api, cid)
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["content"].strip()
    expect(page.locator("#chat-title")).to_have_text(stored["title"])

    # a fresh page lists the conversation; opening it shows both messages
    page.goto(server.url + "/ui/")
    item = page.locator(f'[data-testid="conversation-item"][data-id="{cid}"]')
    expect(item).to_be_visible()
    expect(item).to_contain_text(stored["title"])
    expect(page.get_by_test_id("message-user")).to_have_count(0)
    item.locator("a").click()
    expect(page.get_by_test_id("message-user")).to_have_count(1)
    expect(page.get_by_test_id("message-assistant")).to_have_count(1)
    expect(page.get_by_test_id("message-assistant").locator(".content")).not_to_be_empty()
    expect(item.locator("a")).to_have_attribute("aria-current", "page")

    # and a reload keeps the open conversation (its id is in the URL)
    page.reload()
    expect(page.get_by_test_id("message-user")).to_have_count(1)
    expect(page.get_by_test_id("message-assistant")).to_have_count(1)
    assert current_id(page) == cid

    # export downloads the conversation
    for fmt, suffix in (("markdown", ".md"), ("json", ".json")):
        page.locator("#export-menu summary").click()
        with page.expect_download() as download:
            page.get_by_test_id(f"export-{fmt}").click()
        assert download.value.suggested_filename.endswith(suffix)
        text = Path(download.value.path()).read_text()
        assert question in (
            text if fmt == "markdown" else json.loads(text)["messages"][0]["content"]
        )

    # regenerate replaces the last reply
    with_options(page, SHORT)
    page.get_by_test_id("regenerate-button").click()
    wait_reply_done(page)
    expect(page.get_by_test_id("message-assistant")).to_have_count(1)
    roles = [m["role"] for m in conversation(api, cid)["messages"]]
    assert roles == ["user", "assistant"]


def test_stop_keeps_the_partial_reply(page: Page, server: Server, api: httpx.Client) -> None:
    open_ui(page, server)
    with_options(page, LONG)
    page.get_by_test_id("prompt-input").fill("Write a long story about a dragon who learns to fly.")
    page.get_by_test_id("send-button").click()

    reply = page.get_by_test_id("message-assistant").last
    content = reply.locator(".content")
    expect(content).to_contain_text(re.compile(r"\w+ \w+ \w+ \w+ \w+"), timeout=GENERATION_TIMEOUT)
    page.get_by_test_id("stop-button").click()

    expect(reply).not_to_have_attribute("aria-busy", "true")
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    expect(page.get_by_test_id("send-button")).to_be_visible()
    expect(reply.locator(".status")).to_contain_text("Stopped")
    shown = content.inner_text()
    assert shown.strip()
    page.wait_for_timeout(700)
    assert content.inner_text() == shown  # nothing arrives after stop

    # the server kept the partial reply and stopped generating
    cid = current_id(page)
    deadline = time.monotonic() + 15
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        messages = conversation(api, cid)["messages"]
        last = messages[-1]
        if last["role"] == "assistant":
            break
        time.sleep(0.2)
    assert last["role"] == "assistant" and last["partial"] is True, last
    assert last["content"].strip()
    assert len(last["content"]) < 3000  # the full reply is about 6000 characters

    page.reload()
    reply = page.get_by_test_id("message-assistant").last
    expect(reply.locator(".status")).to_contain_text("Stopped")
    expect(reply.locator(".content")).not_to_be_empty()


def test_search_filters_the_list(page: Page, server: Server, api: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    zebra = api.post("/api/conversations", json={"title": f"Zebra migration {tag}", "model": MODEL})
    volcano = api.post("/api/conversations", json={"title": f"Volcano facts {tag}", "model": MODEL})
    assert zebra.status_code == volcano.status_code == 201

    open_ui(page, server)
    items = page.get_by_test_id("conversation-item")
    expect(items.filter(has_text=tag)).to_have_count(2)

    searches: list[str] = []
    page.on(
        "request",
        lambda r: (
            searches.append(r.url) if "/api/conversations?" in r.url and "q=" in r.url else None
        ),
    )
    search = page.get_by_test_id("search-input")
    search.press_sequentially("zebra", delay=40)
    expect(items.filter(has_text=f"Zebra migration {tag}")).to_have_count(1)
    expect(items.filter(has_text=f"Volcano facts {tag}")).to_have_count(0)
    for text in items.all_inner_texts():
        assert "zebra" in text.lower()
    assert len(searches) <= 2, searches  # debounced, not one request per key

    search.fill(f"nothing-matches-{tag}")
    expect(items).to_have_count(0)
    expect(page.locator("#list-note")).to_contain_text("No conversations match")

    search.fill("")
    expect(items.filter(has_text=tag)).to_have_count(2)

    # Ctrl+K focuses the search box
    page.get_by_test_id("prompt-input").focus()
    page.keyboard.press("Control+k")
    expect(search).to_be_focused()


def test_rename_and_delete(page: Page, server: Server, api: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    cid = api.post("/api/conversations", json={"title": f"Rename me {tag}", "model": MODEL}).json()[
        "id"
    ]
    open_ui(page, server)
    item = page.locator(f'[data-testid="conversation-item"][data-id="{cid}"]')
    item.locator("a").click()
    expect(page.locator("#chat-title")).to_have_text(f"Rename me {tag}")

    item.hover()
    item.get_by_test_id("rename-conversation").click()
    field = page.get_by_test_id("dialog-input")
    expect(field).to_be_focused()
    expect(field).to_have_value(f"Rename me {tag}")
    field.fill(f"Renamed {tag}")
    field.press("Enter")
    expect(item).to_contain_text(f"Renamed {tag}")
    expect(page.locator("#chat-title")).to_have_text(f"Renamed {tag}")
    assert conversation(api, cid)["title"] == f"Renamed {tag}"

    # cancelling a delete keeps the conversation
    item.hover()
    item.get_by_test_id("delete-conversation").click()
    page.get_by_test_id("dialog-cancel").click()
    expect(item).to_have_count(1)

    item.hover()
    item.get_by_test_id("delete-conversation").click()
    page.get_by_test_id("dialog-confirm").click()
    expect(item).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("New chat")
    assert api.get(f"/api/conversations/{cid}").status_code == 404


def test_server_errors_are_shown(
    page: Page, server: Server, api: httpx.Client, problems: PageProblems
) -> None:
    problems.allow(r"status of 404")  # the browser logs the failed request itself

    def add_missing_model(route: Route) -> None:
        response = route.fetch()
        data = response.json()
        data["models"].append({**data["models"][0], "name": "missing:1b", "model": "missing:1b"})
        route.fulfill(response=response, json=data)

    page.route(re.compile(r"/api/tags$"), add_missing_model)
    open_ui(page, server)
    before = len(api.get("/api/conversations").json()["conversations"])
    page.get_by_test_id("model-select").select_option("missing:1b")
    page.get_by_test_id("prompt-input").fill("Hello?")
    page.get_by_test_id("send-button").click()

    banner = page.get_by_role("alert")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("model 'missing:1b' not found")
    # nothing was stored: the text is back in the box, no empty conversation is left
    expect(page.get_by_test_id("prompt-input")).to_have_value("Hello?")
    expect(page.get_by_test_id("message-user")).to_have_count(0)
    assert len(api.get("/api/conversations").json()["conversations"]) == before

    page.get_by_role("button", name="Dismiss the error").click()
    expect(banner).to_be_hidden()

    # the same inside an existing conversation: the refused message is not kept
    cid = api.post("/api/conversations", json={"title": "Error test", "model": MODEL}).json()["id"]
    page.goto(f"{server.url}/ui/#{cid}")
    expect(page.locator("#chat-title")).to_have_text("Error test")
    page.get_by_test_id("model-select").select_option("missing:1b")
    page.get_by_test_id("prompt-input").fill("Hello again?")
    page.get_by_test_id("send-button").click()
    expect(banner).to_contain_text("model 'missing:1b' not found")
    expect(page.get_by_test_id("prompt-input")).to_have_value("Hello again?")
    expect(page.get_by_test_id("message-user")).to_have_count(0)
    assert conversation(api, cid)["messages"] == []


def test_phone_layout(browser: Browser, server: Server, api: httpx.Client) -> None:
    problems = PageProblems()
    page = new_page(
        browser,
        problems,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        cid = api.post("/api/conversations", json={"model": MODEL}).json()["id"]
        r = api.post(
            f"/api/conversations/{cid}/messages",
            json={"content": "What is the capital of France?", "stream": False, "options": SHORT},
        )
        assert r.status_code == 200, r.text

        open_ui(page, server)
        sidebar = page.locator("#sidebar")
        toggle = page.get_by_role("button", name="Show conversations")
        expect(sidebar).to_be_hidden()
        expect(toggle).to_be_visible()
        toggle.click()
        expect(sidebar).to_be_visible()
        expect(page.get_by_test_id("search-input")).to_be_focused()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        page.keyboard.press("Escape")
        expect(sidebar).to_be_hidden()
        expect(toggle).to_be_focused()

        toggle.click()
        page.locator(f'[data-testid="conversation-item"][data-id="{cid}"] a').click()
        expect(sidebar).to_be_hidden()  # opening a conversation closes the drawer
        expect(page.get_by_test_id("message-user")).to_have_count(1)
        expect(page.get_by_test_id("message-assistant")).to_have_count(1)
        # nothing overflows sideways
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "ui-phone.png")
    finally:
        page.context.close()
    assert problems.unexpected() == []


def test_thinking_panel_and_untrusted_markdown(
    browser: Browser, server: Server, api: httpx.Client
) -> None:
    """A scripted stream (the bundled model does not think): reasoning is shown in a
    collapsible panel, and markup in a reply can neither run nor fetch anything."""
    problems = PageProblems()
    page = new_page(browser, problems, permissions=["clipboard-read", "clipboard-write"])
    hostile = (
        'Hello <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>\n\n'
        "[click](javascript:window.__pwned=3) ![pixel](http://tracker.invalid/p.png)\n\n"
        "```python\nprint('hi')\n```\n"
    )

    def line(message: dict[str, str], done: bool = False, **extra: Any) -> str:
        obj = {"model": MODEL, "created_at": "2026-01-01T00:00:00Z", "message": message}
        return json.dumps({**obj, "done": done, **extra}) + "\n"

    def scripted(route: Route) -> None:
        cid = route.request.url.split("/api/conversations/")[1].split("/")[0]
        body = (
            line({"role": "assistant", "content": "", "thinking": "The user greets me. "})
            + line({"role": "assistant", "content": "", "thinking": "Keep it short."})
            + line({"role": "assistant", "content": hostile})
            + line(
                {"role": "assistant", "content": ""},
                True,
                done_reason="stop",
                conversation_id=cid,
                message_id=1,
            )
        )
        route.fulfill(status=200, content_type="application/x-ndjson", body=body)

    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "tracker.invalid" in r.url else None)
    page.route(re.compile(r"/api/conversations/[^/]+/messages$"), scripted)
    try:
        open_ui(page, server)
        page.get_by_test_id("prompt-input").fill("Hi")
        page.get_by_test_id("send-button").click()
        reply = wait_reply_done(page)

        thinking = reply.locator("details.thinking")
        expect(thinking).to_be_visible()
        expect(thinking).not_to_have_attribute("open", "")  # folded once the answer began
        thinking.locator("summary").click()
        expect(thinking).to_contain_text("Keep it short.")

        content = reply.locator(".content")
        expect(content).to_contain_text('Hello <img src=x onerror="window.__pwned=1">')
        assert content.locator("img, script").count() == 0
        assert page.evaluate("window.__pwned") is None
        link = content.locator("a", has_text="click")
        expect(link).to_have_count(1)
        assert not (link.get_attribute("href") or "").startswith("javascript")
        expect(content.get_by_role("link", name="pixel")).to_have_attribute(
            "rel", "noopener noreferrer"
        )
        assert fetched == []

        expect(content.locator(".code-block code.hljs .hljs-built_in")).to_have_text("print")
        content.get_by_test_id("copy-code").click()
        expect(content.get_by_test_id("copy-code")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"
    finally:
        page.context.close()
    assert problems.unexpected() == []
