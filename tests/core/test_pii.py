"""The PII recognisers on a generated corpus: every valid identity number, credit code,
mobile number, card number, email and address in Chinese and English text is found,
right next to Chinese characters too, and look-alikes that fail their checks (a wrong
check character, a date that does not exist, a failed Luhn sum, a landline) are left
alone."""

from __future__ import annotations

import datetime
import random

import pytest

from llmux.policies.pii import (
    _ID_CHECK,
    _ID_WEIGHTS,
    _USCC_ALPHABET,
    _USCC_VALUE,
    _USCC_WEIGHTS,
    PROVINCES,
    Recognizers,
    credit_code_valid,
    id_card_valid,
    luhn_valid,
)

rng = random.Random(11643)


def make_id() -> str:
    born = datetime.date(1930, 1, 1) + datetime.timedelta(days=rng.randrange(30_000))
    body = rng.choice(sorted(PROVINCES)) + f"{rng.randrange(10_000):04d}"
    body += born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    total = sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True))
    return body + _ID_CHECK[total % 11]


def make_uscc() -> str:
    letters = [c for c in _USCC_ALPHABET if c.isalpha()]
    body = rng.choice("9157") + rng.choice("123") + f"{rng.randrange(10**6):06d}"
    org = [rng.choice(_USCC_ALPHABET) for _ in range(8)] + [rng.choice(letters)]
    rng.shuffle(org)
    body += "".join(org)
    total = sum(_USCC_VALUE[c] * w for c, w in zip(body, _USCC_WEIGHTS, strict=True))
    return body + _USCC_ALPHABET[(31 - total % 31) % 31]


def make_card(length: int) -> str:
    body = "62" + "".join(str(rng.randrange(10)) for _ in range(length - 3))
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError


def make_phone() -> str:
    number = "1" + rng.choice("3456789") + "".join(str(rng.randrange(10)) for _ in range(9))
    style = rng.randrange(5)
    if style == 1:
        return f"{number[:3]} {number[3:7]} {number[7:]}"
    if style == 2:
        return f"+86 {number}"
    if style == 3:
        return f"0086-{number[:3]}-{number[3:7]}-{number[7:]}"
    if style == 4:
        return f"+86{number}"
    return number


MAKERS = {
    "id_card": make_id,
    "credit_code": make_uscc,
    "bank_card": lambda: make_card(rng.choice((16, 17, 18, 19))),
    "phone": make_phone,
    "email": lambda: f"user{rng.randrange(999)}.name@example-{rng.randrange(99)}.com.cn",
    "ip": lambda: ".".join(str(rng.randrange(256)) for _ in range(4)),
}
FRAMES = (
    "请联系{}，谢谢", "我的号码是{}。", "Contact: {} today", "({})", "编号{}到期",
    "value={};", "{}", "客户{}已登记",
)  # fmt: skip


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_every_generated_value_is_found(kind: str) -> None:
    found_all = Recognizers()
    for _ in range(300):
        value = MAKERS[kind]()
        frame = rng.choice(FRAMES)
        text = frame.format(value)
        found = found_all.find(text)
        assert [(f.kind, f.text) for f in found] == [(kind, value)], (text, found)


def test_several_in_one_text_in_order() -> None:
    values = [make_id(), make_phone(), make_uscc(), make_card(16), "a.b@example.org"]
    text = "身份证{}，手机{}；公司{}，卡{}，邮箱{}".format(*values)
    found = Recognizers().find(text)
    assert [f.text for f in found] == values
    assert all(text[f.start : f.end] == f.text for f in found)


def test_look_alikes_are_left_alone() -> None:
    r = Recognizers()
    good_id = make_id()
    wrong_check = good_id[:17] + next(c for c in "0123456789X" if c != good_id[17])
    no_such_day = "110105" + "19990230" + "123"
    no_such_day += _ID_CHECK[
        sum(int(c) * w for c, w in zip(no_such_day, _ID_WEIGHTS, strict=True)) % 11
    ]
    future = "11010520991231123"
    future += _ID_CHECK[sum(int(c) * w for c, w in zip(future, _ID_WEIGHTS, strict=True)) % 11]
    good_card = make_card(16)
    bad_luhn = good_card[:15] + str((int(good_card[15]) + 1) % 10)
    good_uscc = make_uscc()
    bad_uscc = good_uscc[:17] + next(c for c in "ABCDE" if c != good_uscc[17])
    for text in (
        f"编号{wrong_check}", f"编号{no_such_day}", f"编号{future}", f"订单{bad_luhn}",
        f"代码{bad_uscc}", "座机010-62345678", "号码12345678901", "版本号 1.2.3",
        "时间 10:30:00", "MAC 00:1a:2b:3c:4d:5e", "1380013800012345678901",
        "IP 300.1.2.3",
    ):  # fmt: skip
        assert r.find(text) == [], (text, r.find(text))
    assert r.find(f"卡号{bad_luhn}")[0].kind == "bank_card"  # a context word says so


def test_checks_on_published_examples() -> None:
    assert id_card_valid("11010519491231002X")  # GB 11643's own example
    assert not id_card_valid("110105194912310021")
    assert credit_code_valid("91350100M000100Y43")
    assert not credit_code_valid("91350100M000100Y44")
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_operator_patterns_and_kinds() -> None:
    r = Recognizers(kinds=["email"], patterns={"employee": r"EMP-\d{6}"})
    found = r.find("EMP-123456 写信给 a@b.cn，电话 13800138000")
    assert [(f.kind, f.text) for f in found] == [("employee", "EMP-123456"), ("email", "a@b.cn")]
    with pytest.raises(ValueError, match="unknown PII kinds: passport"):
        Recognizers(kinds=["passport"])
