"""The semantic cache's negation guard: negations, polarity pairs, numbers and CJK
overlap, English and Chinese (the suite in semantic_pairs.json holds more)."""

from __future__ import annotations

import pytest

from llmux.policies.polarity import compatible, signature


def ok(a: str, b: str) -> bool:
    return compatible(signature(a), signature(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I turn on the lights?", "How do I turn off the lights?"),
        ("Is it safe?", "Is it not safe?"),
        ("Why does it work?", "Why doesn't it work?"),
        ("Why does it work?", "Why doesn\u2019t it work?"),  # a typographic apostrophe
        ("Take it with food", "Take it without food"),
        ("How do I lock the door?", "How do I unlock the door?"),
        ("Show the max value", "Show the min value"),
        ("Convert 5 miles", "Convert 50 miles"),
        ("Convert 5 to 7", "Convert 7 to 5"),  # the numbers' order
        ("Add two users", "Add three users"),
        ("How do I log in?", "How do I log out?"),
        ("怎么打开蓝牙？", "怎么关闭蓝牙？"),
        ("请开灯", "请关灯"),
        ("我有权限", "我没有权限"),
        ("可以吃吗", "不可以吃吗"),
        ("这个功能启用了吗", "这个功能未启用吗"),
        ("可以吸烟吗", "禁止吸烟吗"),
        ("3加5等于几", "3加6等于几"),
        ("买三本书", "买四本书"),
        ("跑步之前吃什么", "跑步之后吃什么"),
        ("如何重置密码", "如何重置路由器"),  # little CJK overlap
        ("如何重置密码", "How do I reset my password?"),  # CJK on one side only
    ],
)
def test_blocked(a: str, b: str) -> None:
    assert not ok(a, b) and not ok(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I enable dark mode?", "How can I turn on dark mode?"),
        ("How do I reset my password?", "How can I reset my password?"),
        ("What is the capital of France?", "What's the capital city of France?"),
        ("Convert 5 miles to km", "How many km are 5 miles?"),
        ("北京是中国的首都吗？", "北京是不是中国的首都"),  # A-not-A: a question
        ("如何重置密码？", "怎么重置密码？"),
        ("今天天气怎么样？", "今天的天气怎么样？"),
        ("水的沸点是多少？", "水的沸点是多少度？"),
        ("这个东西不错", "这个东西不错吧"),  # 不错 is no negation
    ],
)
def test_allowed(a: str, b: str) -> None:
    assert ok(a, b) and ok(b, a)


def test_a_signature_holds_no_text() -> None:
    s = signature("Please don't turn off server 42")
    assert s.markers == {"not", "on:2"} and s.numbers == ("42",) and not s.cjk
