"""What finding PII costs per KB of text (``policies/pii.py``), against parsing the same
text as a chat request body (``json.loads``), which every parsed request pays anyway.

    .venv/bin/python bench/pii.py [--rounds 2000]

Texts: 1 KB of mixed Chinese and English without PII, the same with three values in it
(a mobile, a card number, an email), and 1 KB of digits and separators (tables, logs),
the worst case for the number recognisers. The target is 0.2 ms per KB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from llmux.policies.pii import Recognizers

PLAIN = (
    "客户张先生于昨日来电，询问账户余额以及最近的交易记录。"
    "The customer asked about the balance and recent transactions. "
) * 20
WITH_PII = PLAIN[:400] + "手机13800138000，卡号6222021234567890123，邮箱a@b.cn" + PLAIN[400:]
DIGITS = "2026-12-02 10:31:07 id=483920 total 1,234.50 ref 88120391 " * 20


def kb(text: str) -> str:
    out = text
    while len(out.encode()) > 1024:
        out = out[:-1]
    return out


def timed(call: Callable[[], object], rounds: int) -> float:
    """Median µs of ``rounds`` calls, in 10 batches."""
    batch = max(1, rounds // 10)
    samples = []
    for _ in range(10):
        began = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - began) / batch * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    finder = Recognizers()
    print("| text (1 KB) | found | parse the body (µs) | find PII (µs) | find / parse |")
    print("|---|---|---|---|---|")
    for name, text in (("no PII", PLAIN), ("three values", WITH_PII), ("digits", DIGITS)):
        text = kb(text)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
        parse = timed(lambda body=body: json.loads(body), args.rounds)  # type: ignore[misc]
        find = timed(lambda text=text: finder.find(text), args.rounds)  # type: ignore[misc]
        found = len(finder.find(text))
        print(f"| {name} | {found} | {parse:.1f} | {find:.1f} | {find / parse:.1f}x |")


if __name__ == "__main__":
    main()
