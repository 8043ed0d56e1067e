"""Model commands, Ollama's verbs: ``pull``, ``push``, ``create -f Modelfile``, ``cp``,
``rm``, ``show`` and ``stop``. They talk to the server at ``LLMUX_HOST`` through the
SDK; transfers draw progress bars on stderr. ``create`` parses the Modelfile here and
uploads local GGUF files as blobs first (the server takes no Modelfile)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from llmux.cli.common import ConfigOpt, client, err, fail, out, sdk_errors, settings
from llmux.client.types import ProgressResponse
from llmux.errors import InvalidRequest
from llmux.models.modelfile import Modelfile, parse_modelfile

InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="allow a registry over plain http (no TLS)")
]
UPLOAD_READ = 1 << 20


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def show_progress(lines: Iterable[ProgressResponse]) -> None:
    """Progress lines as Ollama's CLI shows them: a bar per digest, other statuses as
    lines of text."""
    tasks: dict[str, TaskID] = {}
    with _bars() as bars:
        for line in lines:
            status = line.status or ""
            if line.digest and line.total:
                task = tasks.get(line.digest)
                if task is None:
                    task = tasks[line.digest] = bars.add_task(status, total=line.total)
                bars.update(task, completed=line.completed or 0, description=status)
            elif status:
                bars.console.print(status)


def _sha256(path: Path, bars: Progress) -> str:
    task = bars.add_task(f"hashing {path.name}", total=path.stat().st_size)
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * UPLOAD_READ):
            h.update(chunk)
            bars.advance(task, len(chunk))
    return "sha256:" + h.hexdigest()


def upload_blob(http: httpx.Client, path: Path) -> str:
    """Send a local file as a blob unless the server has it; returns its digest."""
    with _bars() as bars:
        digest = _sha256(path, bars)
        if http.head(f"/api/blobs/{digest}").status_code == 200:
            return digest
        task = bars.add_task(f"copying file {digest}", total=path.stat().st_size)

        def body() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(UPLOAD_READ):
                    bars.advance(task, len(chunk))
                    yield chunk

        response = http.post(f"/api/blobs/{digest}", content=body())
    if response.status_code not in (200, 201):
        fail(f"uploading {path} failed ({response.status_code}): {response.text.strip()}")
    return digest


def local_path(value: str, base: Path) -> Path | None:
    """A FROM/ADAPTER value as a file, when it names one (relative to the Modelfile)."""
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    if candidate.is_dir():
        fail(
            f"{value} is a directory; llmux creates models from GGUF files only (convert "
            "safetensors with llama.cpp's convert_hf_to_gguf.py first)"
        )
    looks_like_path = value.startswith((".", "/", "~")) or value.lower().endswith(".gguf")
    if candidate.is_file():
        return candidate
    if looks_like_path:
        fail(f"{value}: no such file (paths are relative to the Modelfile)")
    return None


def create_fields(mf: Modelfile, base: Path, http: httpx.Client) -> dict[str, Any]:
    """The /api/create body for a parsed Modelfile, uploading local files first."""
    fields: dict[str, Any] = {}
    source = local_path(mf.from_ or "", base)
    if source is None:
        fields["from_"] = mf.from_
    else:
        err.print("gathering model components")
        fields["files"] = {source.name: upload_blob(http, source)}
    adapters = {}
    for adapter in mf.adapters:
        path = local_path(adapter, base)
        if path is None:
            fail(f"ADAPTER {adapter}: adapters must be local GGUF files")
        adapters[path.name] = upload_blob(http, path)
    if adapters:
        fields["adapters"] = adapters
    for key in ("template", "system"):
        if getattr(mf, key) is not None:
            fields[key] = getattr(mf, key)
    if mf.parameters:
        fields["parameters"] = mf.parameters
    if mf.messages:
        fields["messages"] = mf.messages
    if mf.license:
        fields["license"] = mf.license
    return fields


def pull(
    model: Annotated[str, typer.Argument(help="model name, e.g. host/namespace/model:tag")],
    insecure: InsecureOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Download a model from a registry (or hf.co/<user>/<repo>[:<quant>])."""
    with sdk_errors(), client(config, retry=False) as c:
        show_progress(c.pull(model, insecure=insecure, stream=True))


def push(
    model: Annotated[str, typer.Argument(help="model name, e.g. host/namespace/model:tag")],
    insecure: InsecureOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Upload a model to its registry."""
    with sdk_errors(model), client(config, retry=False) as c:
        show_progress(c.push(model, insecure=insecure, stream=True))


def create(
    model: Annotated[str, typer.Argument(help="name for the new model")],
    file: Annotated[
        Path, typer.Option("--file", "-f", help="the Modelfile (default ./Modelfile)")
    ] = Path("Modelfile"),
    quantize: Annotated[
        str | None, typer.Option("--quantize", "-q", help="quantize the weights, e.g. q4_K_M")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a model from a Modelfile."""
    try:
        mf = parse_modelfile(file.read_text("utf-8"))
    except OSError as exc:
        fail(f"cannot read the Modelfile {file}: {exc.strerror or exc}")
    except InvalidRequest as exc:
        fail(f"{file}: {exc.message}")
    base_url = settings(config).base_url
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(600, connect=5)) as http:
        try:
            fields = create_fields(mf, file.resolve().parent, http)
        except httpx.HTTPError as exc:
            fail(f"cannot reach the server at {base_url}: {exc}")
    if quantize:
        fields["quantize"] = quantize
    with sdk_errors(), client(config, retry=False) as c:
        show_progress(c.create(model, stream=True, **fields))


def cp(
    source: Annotated[str, typer.Argument(help="existing model")],
    destination: Annotated[str, typer.Argument(help="new name")],
    config: ConfigOpt = None,
) -> None:
    """Copy a model under a new name."""
    with sdk_errors(source), client(config) as c:
        c.copy(source, destination)
    out.print(f"copied '{source}' to '{destination}'")


def rm(
    models: Annotated[list[str], typer.Argument(help="models to delete")],
    config: ConfigOpt = None,
) -> None:
    """Delete models (blobs other models use are kept)."""
    with client(config) as c:
        for model in models:
            with sdk_errors(model):
                c.delete(model)
            out.print(f"deleted '{model}'")


def show(
    model: Annotated[str, typer.Argument(help="model name")],
    modelfile: Annotated[bool, typer.Option("--modelfile", help="the Modelfile")] = False,
    parameters: Annotated[bool, typer.Option("--parameters", help="the parameters")] = False,
    system: Annotated[bool, typer.Option("--system", help="the system prompt")] = False,
    template: Annotated[bool, typer.Option("--template", help="the template")] = False,
    license: Annotated[bool, typer.Option("--license", help="the license")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show a model's details, or one part of it."""
    with sdk_errors(model), client(config) as c:
        info = c.show(model)
    for wanted, text in (
        (modelfile, info.modelfile),
        (parameters, info.parameters),
        (system, info.system),
        (template, info.template),
        (license, info.license),
    ):
        if wanted:
            out.print(text or "", markup=False)
            return
    details = info.details
    out.print("  Model")
    for label, value in (
        ("architecture", details.family),
        ("parameters", details.parameter_size),
        ("context length", (info.model_info or {}).get(f"{details.family}.context_length")),
        ("quantization", details.quantization_level),
    ):
        if value:
            out.print(f"    {label:<20}{value}", markup=False)
    if info.capabilities:
        out.print("\n  Capabilities")
        for capability in info.capabilities:
            out.print(f"    {capability}")
    for title, text in (("Parameters", info.parameters), ("System", info.system)):
        if text:
            out.print(f"\n  {title}")
            for row in text.splitlines():
                out.print(f"    {row}", markup=False)
    if info.license:
        out.print("\n  License")
        out.print(f"    {info.license.splitlines()[0]}", markup=False)


def stop(
    model: Annotated[str, typer.Argument(help="model to unload")],
    config: ConfigOpt = None,
) -> None:
    """Unload a running model from memory."""
    with sdk_errors(model), client(config) as c:
        c.generate(model, "", keep_alive=0)


def register(app: typer.Typer) -> None:
    """Add the model commands to the ``llmux`` app (``list``/``ps`` live in main)."""
    for command in (pull, push, create, show, stop):
        app.command()(command)
    app.command("cp")(cp)
    app.command("rm")(rm)
