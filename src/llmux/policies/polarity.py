"""The semantic cache's negation guard: what an embedding cannot be trusted to tell apart.

Sentence embeddings put "turn on the lights" and "turn off the lights" close together
(cosine 0.84 with all-MiniLM-L6-v2; "我有权限" and "我没有权限" 0.998), so a semantic
hit must also pass this check. :func:`signature` reduces a prompt to what must match
exactly, and :func:`compatible` compares two signatures:

* **negations**: English ``not``, ``no``, ``never``, ``without``, ``n't`` and the like;
  Chinese 不, 没(有), 别, 非, 无, 未, 勿, 莫, 禁止. The A-not-A question forms
  (是不是, 能不能, 有没有 ...) ask a question, so they are not negations;
* **polarity words**, as one side of a pair: on/off (and enable/disable), increase/decrease,
  before/after, max/min, open/close, add/remove, lock/unlock, upload/download, ...;
  开/关, 打开/关闭, 启用/禁用, 增加/减少, 之前/之后, 上传/下载, 最大/最小 ...;
* **numbers**: runs of digits, English number words and Chinese numerals, in order;
* **CJK characters**, less a short list of function characters, when either text has
  any: their overlap (Jaccard) must be at least :data:`CJK_OVERLAP`. An embedding model
  that does not know a script (all-MiniLM-L6-v2 reads most Chinese characters as
  ``[UNK]``) finds any two such texts alike; this keeps that from becoming a hit.

A mismatch is a miss, so the guard errs towards misses: "a book on history" and "a
history book" differ in ``on`` and do not share an entry. It stores no text: the index
keeps the signature beside the vector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CJK_OVERLAP = 0.75


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


NEGATIONS_EN = _words(
    "not no never none nothing nobody nowhere neither nor without cannot cant dont doesnt"
    " didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt"
    " mustnt neednt non"
)
NEGATIONS_ZH = ("没有", "没", "不", "别", "非", "无", "未", "勿", "莫", "禁止", "甭")
QUESTIONS_ZH = ("有没有", "可不可以", "能不能够", *(f"{a}不{a}" for a in "是能会要对好行可用"))
# words that contain a negation or polarity character without meaning one
NEUTRAL_ZH = (
    "不错", "不过", "不断", "不久", "不少", "不同", "非常", "无论", "未来", "关于", "关系",
    "关键", "关注", "关心", "开始", "开发", "开心", "离开", "公开", "无线", "并非", "多少",
    "大小", "上下", "前后", "左右", "开关", "大家", "大学", "小时", "一下", "一些", "一点",
    "一起", "一样", "一直", "一定", "一般", "唯一", "统一",
)  # fmt: skip

# (label, first side, second side). English: words, or stems where they end in "*";
# Chinese: substrings, longest first within a side ("关闭" is taken before "关").
PAIRS_EN = (
    ("on", "on enabl* activat*", "off disabl* deactivat*"),
    ("increase", "increas* rais* rise* rising grow* more", "decreas* lower* reduc* less fewer shrink*"),
    ("before", "before prior", "after afterwards"),
    ("max", "max maximum* maximal maximi*", "min minimum* minimal minimi*"),
    ("open", "open*", "clos* shut*"),
    ("add", "add adds added adding insert* creat*", "remov* delet* drop*"),
    ("lock", "lock locks locked locking", "unlock*"),
    ("load", "upload*", "download*"),
    ("up", "up", "down"),
    ("start", "start* begin* began", "stop* end ends ended ending finish*"),
    ("allow", "allow* permit* accept* approv* grant*",
     "block* deny denies denied forbid* prohibit* reject* disallow* revok*"),
    ("show", "show* display* unhid*", "hide hides hidden hiding"),
    ("include", "includ*", "exclud*"),
    ("import", "import imports imported importing", "export*"),
    ("install", "install*", "uninstall*"),
    ("connect", "connect*", "disconnect*"),
    ("encrypt", "encrypt*", "decrypt*"),
    ("above", "above over higher greater larger bigger", "below under smaller"),
    ("buy", "buy* bought purchas*", "sell* sold"),
    ("true", "true yes", "false"),
    ("first", "first", "last"),
    ("best", "best", "worst"),
    ("hot", "hot warm*", "cold* cool*"),
    ("fast", "fast* quick*", "slow*"),
    ("in", "inside indoor* login signin", "outside outdoor* logout signout out"),
    ("push", "push*", "pull*"),
    ("left", "left", "right"),
)  # fmt: skip
PAIRS_ZH = (
    ("on", "打开 开启 启用 启动 开", "关闭 关掉 禁用 停用 关"),
    ("increase", "增加 增大 提高 升高 加大 调高 多", "减少 减小 降低 调低 少"),
    ("before", "之前 以前 前", "之后 以后 后"),
    ("max", "最大 最多 最高 最长", "最小 最少 最低 最短"),
    ("add", "添加 增添 新增 创建", "删除 移除 去掉"),
    ("lock", "锁定 上锁", "解锁"),
    ("load", "上传", "下载"),
    ("up", "上", "下"),
    ("allow", "允许 批准 接受 同意", "拒绝 阻止 不许"),
    ("show", "显示 展示", "隐藏"),
    ("in", "进 入", "出"),
    ("buy", "买", "卖"),
    ("big", "大", "小"),
    ("hot", "热", "冷"),
    ("fast", "快", "慢"),
    ("left", "左", "右"),
)  # fmt: skip
NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    " fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy"
    " eighty ninety hundred thousand million billion half once twice double triple"
)
FUNCTION_ZH = frozenset(
    "的了吗呢吧啊呀嘛么是请下个这那些我你他她它们如何怎样为什在和与及或把被给从到就都也还很会能可以要想让得地着过该应"
)

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*|[零〇一二两三四五六七八九十百千万亿]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def _side(spec: str) -> tuple[frozenset[str], tuple[str, ...]]:
    words = spec.split()
    return frozenset(w for w in words if not w.endswith("*")), tuple(
        w[:-1] for w in words if w.endswith("*")
    )


_RULES_EN = tuple(
    (f"{label}:{n}", *_side(spec)) for label, *sides in PAIRS_EN for n, spec in enumerate(sides, 1)
)
_RULES_ZH = tuple(
    (f"{label}:{n}", tuple(spec.split()))
    for label, *sides in PAIRS_ZH
    for n, spec in enumerate(sides, 1)
)


@dataclass(frozen=True, slots=True)
class Signature:
    """What two prompts must share for one to be answered with the other's reply."""

    markers: frozenset[str]  # "not", "on:1", "on:2", ...
    numbers: tuple[str, ...]
    cjk: frozenset[str]


def signature(text: str) -> Signature:
    lowered = text.lower().replace("\u2019", "'")
    markers: set[str] = set()
    for raw in _WORD.findall(lowered):
        word = raw.replace("'", "")
        if word in NEGATIONS_EN or raw.endswith("n't"):
            markers.add("not")
        for marker, exact, stems in _RULES_EN:
            if word in exact or word.startswith(stems):
                markers.add(marker)
    numbers = [w for w in _WORD.findall(lowered) if w in NUMBER_WORDS]
    plain = lowered
    if _CJK.search(lowered):
        for word in (*QUESTIONS_ZH, *NEUTRAL_ZH):
            plain = plain.replace(word, " ")
        _chinese(plain, markers)
    numbers += [n.replace(",", "") for n in _NUMBER.findall(plain)]
    cjk = frozenset(_CJK.findall(plain)) - FUNCTION_ZH
    return Signature(frozenset(markers), tuple(numbers), cjk)


def _chinese(text: str, markers: set[str]) -> None:
    """Adds the Chinese polarity and negation markers of ``text`` (without its question
    forms and neutral words)."""
    for marker, words in _RULES_ZH:
        for word in words:
            if word in text:
                markers.add(marker)
                text = text.replace(word, " ")
    if any(word in text for word in NEGATIONS_ZH):
        markers.add("not")


def compatible(a: Signature, b: Signature) -> bool:
    """Whether a reply to one may answer the other: the same negations, polarity words
    and numbers, and enough of the same CJK characters."""
    if a.markers != b.markers or a.numbers != b.numbers:
        return False
    if not a.cjk and not b.cjk:
        return True
    return len(a.cjk & b.cjk) / len(a.cjk | b.cjk) >= CJK_OVERLAP
