"""The conversation repository on SQLite and PostgreSQL: the same behaviour on both."""

from __future__ import annotations

import pytest

from llmux.errors import NotFound
from llmux.storage import conversations as store
from llmux.storage.conversations import NewMessage, SqlConversations, search_terms, snippet
from llmux.storage.database import Database

pytestmark = pytest.mark.anyio


async def test_create_get_update_delete(db: Database) -> None:
    repo = SqlConversations(db)
    conv = await repo.create(title="Physics", model="m:1", system="Be brief.")
    got = await repo.get(conv.id)
    assert (got.title, got.model, got.system, got.message_count) == (
        "Physics",
        "m:1",
        "Be brief.",
        0,
    )
    changed = await repo.update(conv.id, title="Optics", system="")
    assert (changed.title, changed.model, changed.system) == ("Optics", "m:1", "")
    assert changed.updated_at >= conv.updated_at
    await repo.delete(conv.id)
    with pytest.raises(NotFound):
        await repo.get(conv.id)
    with pytest.raises(NotFound):
        await repo.delete(conv.id)
    with pytest.raises(NotFound):
        await repo.messages(conv.id)


async def test_append_keeps_order_counts_and_sets_the_title_once(db: Database) -> None:
    repo = SqlConversations(db)
    conv = await repo.create()
    first = await repo.append(conv.id, NewMessage("user", "hello there"), title_if_empty="hello")
    reply = await repo.append(
        conv.id,
        NewMessage(
            "assistant",
            "hi!",
            thinking="greet",
            model="m",
            done_reason="stop",
            prompt_tokens=5,
            completion_tokens=2,
        ),
    )
    await repo.append(conv.id, NewMessage("user", "again"), title_if_empty="again")
    partial = await repo.append(conv.id, NewMessage("assistant", "cut sh", partial=True))
    stored = await repo.messages(conv.id)
    assert [m.id for m in stored] == [first.id, reply.id, stored[2].id, partial.id]
    assert [m.content for m in stored] == ["hello there", "hi!", "again", "cut sh"]
    assert stored[1].thinking == "greet" and stored[1].done_reason == "stop"
    assert stored[1].completion_tokens == 2
    assert stored[3].partial and not stored[1].partial
    got = await repo.get(conv.id)
    assert got.title == "hello" and got.message_count == 4
    await repo.delete_message(conv.id, partial.id)
    assert (await repo.get(conv.id)).message_count == 3
    with pytest.raises(NotFound):
        await repo.append("nope", NewMessage("user", "x"))


async def test_search_titles_and_messages_by_word_prefix(db: Database) -> None:
    repo = SqlConversations(db)
    a = await repo.create(title="Photosynthesis homework")
    await repo.append(a.id, NewMessage("user", "How do plants make sugar from light?"))
    b = await repo.create(title="Trip planning")
    await repo.append(b.id, NewMessage("user", "Pack sunscreen and a light jacket for Lisbon"))
    c = await repo.create(title="Unrelated")
    await repo.append(c.id, NewMessage("user", "nothing to see"))

    def ids(found: list) -> set[str]:
        return {x.id for x in found}

    assert ids(await repo.find(query="photosynth")) == {a.id}  # title, prefix
    assert ids(await repo.find(query="LIGHT")) == {a.id, b.id}  # messages, any case
    assert ids(await repo.find(query="light lisbon")) == {b.id}  # every word required
    found = await repo.find(query="sunscreen")
    assert found[0].snippet and "sunscreen" in found[0].snippet.lower()
    assert await repo.find(query="zebra") == []
    # queries are words only: FTS syntax and SQL in the box are harmless
    for hostile in ['"', "light*", "NEAR(", "'; DROP TABLE messages; --", "a OR b", "-x", "^"]:
        await repo.find(query=hostile)
    assert len(await repo.find()) == 3


async def test_deleted_conversations_leave_the_index(db: Database) -> None:
    repo = SqlConversations(db)
    conv = await repo.create(title="secret plans")
    await repo.append(conv.id, NewMessage("user", "the treasure is buried"))
    await repo.delete(conv.id)
    assert await repo.find(query="treasure") == []
    assert await repo.find(query="secret") == []


async def test_list_is_newest_first_with_paging(db: Database) -> None:
    repo = SqlConversations(db)
    made = [await repo.create(title=f"c{i}") for i in range(5)]
    await repo.append(made[1].id, NewMessage("user", "bump"))
    listed = [c.title for c in await repo.find(limit=10)]
    assert listed[0] == "c1" and set(listed) == {f"c{i}" for i in range(5)}
    page = [c.title for c in await repo.find(limit=2, offset=1)]
    assert page == listed[1:3]


async def test_migrations_run_once(db: Database) -> None:
    repo = SqlConversations(db)
    conv = await repo.create(title="kept")
    again = Database(db.url)
    await again.open()  # already at the newest version: nothing changes
    assert (await SqlConversations(again).get(conv.id)).title == "kept"
    await again.aclose()


def test_search_terms_are_words() -> None:
    assert search_terms('Hello, "world"* OR café') == ["hello", "world", "or", "café"]
    assert search_terms("  ;--  ") == []


@pytest.mark.parametrize("window", [4000, 3, 1], ids=["all-recent", "recent-then-older", "tiny"])
async def test_search_ranks_the_newest_match_first_and_pages(
    db: Database, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both search paths: enough matches among the newest messages, and the rest of the
    index asked as well (a small window makes "common" look rare here)."""
    monkeypatch.setattr(store, "WINDOW", window)
    repo = SqlConversations(db)
    made = []
    for i in range(6):
        conv = await repo.create(title=f"chat {i}")
        await repo.append(conv.id, NewMessage("user", f"common word number {i}"))
        made.append(conv.id)
    titled = await repo.create(title="common in the title only")
    # an old conversation gets a new matching message: it moves to the top
    await repo.append(made[0], NewMessage("assistant", "another common reply"))
    order = [c.id for c in await repo.find(query="common", limit=10)]
    assert order == [made[0], titled.id, *reversed(made[1:])]
    pages = [[c.id for c in await repo.find(query="common", limit=3, offset=o)] for o in (0, 3, 6)]
    assert [c for page in pages for c in page] == order
    assert (await repo.find(query="common", limit=1))[0].snippet == "another common reply"


def test_snippets_centre_on_the_first_match() -> None:
    text = " ".join(f"w{i}" for i in range(40)) + " Lighthouse keepers " + "end " * 20
    cut = snippet(text, ["lighthouse"])
    assert cut.startswith("…") and cut.endswith("…") and "Lighthouse" in cut
    assert snippet("short text", ["zzz"]) == "short text"


async def test_nul_and_lone_surrogates_are_stored_the_same_on_both(db: Database) -> None:
    repo = SqlConversations(db)
    conv = await repo.create(title="a\x00b", model="m\x00", system="s\ud800")
    assert (conv.title, conv.model, conv.system) == ("a\ufffdb", "m\ufffd", "s\ufffd")
    await repo.update(conv.id, title="t\x00")
    await repo.append(
        conv.id, NewMessage("assistant", "x\x00y \U0001f600", thinking="\x00", model="m")
    )
    got = await repo.get(conv.id)
    (message,) = await repo.messages(conv.id)
    assert (got.title, got.system) == ("t\ufffd", "s\ufffd")
    assert (message.content, message.thinking) == ("x\ufffdy \U0001f600", "\ufffd")
    assert [c.id for c in await repo.find(query="x\x00y")] == [conv.id]
    for call in (repo.get, repo.messages, repo.delete):
        with pytest.raises(NotFound):
            await call(conv.id + "\x00")
    with pytest.raises(NotFound):
        await repo.append(conv.id + "\x00", NewMessage("user", "hi"))


async def test_offsets_past_a_64_bit_integer_find_nothing(db: Database) -> None:
    repo = SqlConversations(db)
    await repo.create(title="one")
    assert await repo.find(offset=2**63) == []
    assert await repo.find(query="one", offset=2**63) == []
    assert [c.title for c in await repo.find(limit=2**64)] == ["one"]


async def test_an_owner_lists_and_searches_only_their_own(db: Database) -> None:
    repo = SqlConversations(db)
    mine = await repo.create(title="apple pie", owner="alice")
    theirs = await repo.create(title="apple tart", owner="bob")
    await repo.append(mine.id, NewMessage("user", "banana bread recipe"))
    await repo.append(theirs.id, NewMessage("user", "banana split recipe"))
    loose = await repo.create(title="apple crumble")  # made with access control off
    assert {c.id for c in await repo.find(owner="alice")} == {mine.id}
    assert {c.id for c in await repo.find(owner="bob")} == {theirs.id}
    assert {c.id for c in await repo.find(query="apple", owner="alice")} == {mine.id}
    assert {c.id for c in await repo.find(query="banana", owner="bob")} == {theirs.id}
    assert {c.id for c in await repo.find(query="banana")} == {mine.id, theirs.id}
    assert (await repo.get(mine.id)).owner == "alice"
    assert await repo.adopt("root") == 1
    assert (await repo.get(loose.id)).owner == "root"
    assert {c.id for c in await repo.find(query="apple", owner="root")} == {loose.id}
