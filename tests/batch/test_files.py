"""/v1/files through the official openai SDK, in process: upload, list, show, download,
delete; limits, bad files and other users' files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.auth.test_access import bearer, call, key_for
from tests.support.inprocess import BASE, App, in_process


def line(i: int) -> bytes:
    body = {"model": "fake", "messages": [{"role": "user", "content": f"ticket {i}"}]}
    request = {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(request).encode() + b"\n"


def client(app: App, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=BASE + "/v1", api_key=key, http_client=app.client, max_retries=0)


def test_upload_list_show_download_delete(tmp_path: Path) -> None:
    data = b"".join(line(i) for i in range(3))
    with in_process(tmp_path) as app:
        oa = client(app)
        made = oa.files.create(file=("requests.jsonl", data), purpose="batch")
        assert made.id.startswith("file-") and made.object == "file"
        assert made.bytes == len(data) and made.filename == "requests.jsonl"
        assert made.purpose == "batch" and made.status == "processed"
        again = oa.files.create(file=("same.jsonl", data), purpose="batch")
        listed = oa.files.list()
        assert [f.id for f in listed.data] == [again.id, made.id]  # newest first
        assert oa.files.retrieve(made.id).bytes == len(data)
        assert oa.files.content(made.id).read() == data
        assert oa.files.delete(made.id).deleted is True
        with pytest.raises(openai.NotFoundError):
            oa.files.retrieve(made.id)
        assert oa.files.content(again.id).read() == data  # the shared bytes stay
        oa.files.delete(again.id)
        assert list((tmp_path / "files").iterdir()) == []  # and go with the last file


def test_pages_of_files(tmp_path: Path) -> None:
    with in_process(tmp_path) as app:
        oa = client(app)
        ids = [oa.files.create(file=(f"f{i}.jsonl", line(i)), purpose="batch").id for i in range(5)]
        page = oa.files.list(limit=2, order="asc")
        assert [f.id for f in page.data] == ids[:2] and page.has_more
        assert [f.id for f in oa.files.list(order="asc")] == ids  # the SDK follows pages
        r = app.client.get("/v1/files", params={"limit": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_an_empty_batch_file_is_a_400(tmp_path: Path) -> None:
    with in_process(tmp_path) as app:
        for data in (b"", b"\n  \n"):
            with pytest.raises(openai.BadRequestError) as info:
                client(app).files.create(file=("empty.jsonl", data), purpose="batch")
            assert "no lines" in str(info.value)
        assert [p.name for p in (tmp_path / "files").iterdir()] == []  # nothing kept


def test_lines_that_are_not_requests_upload_and_are_judged_by_the_batch(tmp_path: Path) -> None:
    """The batch made from the file writes such lines to its error file, naming each
    (tests/batch/test_batches.py); the upload takes them as they are."""
    data = line(1) + b"{not json\n" + b"[1, 2]\n" + b"\xff\xfe\n"
    with in_process(tmp_path) as app:
        made = client(app).files.create(file=("mixed.jsonl", data), purpose="batch")
        assert made.bytes == len(data)
        assert client(app).files.content(made.id).read() == data


def test_bad_uploads(tmp_path: Path) -> None:
    with in_process(tmp_path) as app:
        r = app.client.post("/v1/files", files={"file": ("a.jsonl", line(1))}, data={"purpose": "fine-tune"})  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
        r = app.client.post("/v1/files", data={"purpose": "batch"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "file"
        r = app.client.post("/v1/files", json={"purpose": "batch"})
        assert r.status_code == 400
        r = app.client.post(
            "/v1/files", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}
        )  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_limits_on_lines_and_bytes(tmp_path: Path) -> None:
    with in_process(tmp_path, batch={"max_lines": 3, "max_file_bytes": 4096}) as app:
        oa = client(app)
        with pytest.raises(openai.BadRequestError, match="more than 3 lines"):
            oa.files.create(
                file=("many.jsonl", b"".join(line(i) for i in range(4))), purpose="batch"
            )
        with pytest.raises(openai.APIStatusError) as info:
            oa.files.create(file=("big.jsonl", line(1) + b" " * 5000 + b"\n"), purpose="batch")
        assert info.value.status_code == 413
        past_form = io.BytesIO(b"x" * (4096 + 2 * 1024 * 1024))
        r = app.client.post("/v1/files", files={"file": ("huge.jsonl", past_form)}, data={"purpose": "batch"})  # fmt: skip
        assert r.status_code == 413  # refused by the body limit before the form is read


def test_a_50000_line_file_uploads(tmp_path: Path) -> None:
    data = b"".join(line(i) for i in range(50_000))
    with in_process(tmp_path) as app:
        made = client(app).files.create(file=("tickets.jsonl", data), purpose="batch")
        assert made.bytes == len(data)
        repo = app.client.app.state.services.files.repo  # type: ignore[attr-defined]
        row: Any = call(app, repo.get, made.id)
        assert row.lines == 50_000


def test_other_users_files_are_not_found(tmp_path: Path) -> None:
    with in_process(tmp_path, auth={"mode": "on", "max_failures": 1000}) as app:
        alice = call(app, app.access.add_user, "alice", "correct horse battery", "user")
        bob = call(app, app.access.add_user, "bob", "correct horse battery", "user")
        a, b = key_for(app, alice), key_for(app, bob)
        made = client(app, a).files.create(file=("mine.jsonl", line(1)), purpose="batch")
        for path in (f"/v1/files/{made.id}", f"/v1/files/{made.id}/content"):
            assert app.client.get(path, headers=bearer(b)).status_code == 404
        assert app.client.delete(f"/v1/files/{made.id}", headers=bearer(b)).status_code == 404
        assert client(app, b).files.list().data == []
        assert [f.id for f in client(app, a).files.list()] == [made.id]
        no_batch = key_for(app, alice, scopes=frozenset({"inference"}))
        assert app.client.get("/v1/files", headers=bearer(no_batch)).status_code == 403
        assert app.client.get("/v1/files").status_code == 401
