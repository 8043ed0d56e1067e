"""Complete JSON that a token limit cut short.

Output produced under a JSON grammar is always a valid *prefix* of JSON. When
``num_predict`` or the context ends it early, :func:`closing_suffix` returns the
shortest text that makes it a complete document (close the string, fill a missing
value with ``null``, close brackets), so ``format: "json"`` replies always parse. The
reply still says ``done_reason: "length"``; a schema's required keys that were never
generated stay missing.
"""

from __future__ import annotations

LITERALS = ("true", "false", "null")


def closing_suffix(prefix: str) -> str:
    stack: list[str] = []
    in_string = is_key = closed_key = escape = False
    unicode_left = 0
    last = ""  # last significant character outside strings: { [ , : " or v (scalar)
    scalar = ""  # the number or literal being written
    for ch in prefix:
        if in_string:
            if unicode_left:
                unicode_left -= 1
            elif escape:
                escape = False
                unicode_left = 4 if ch == "u" else 0
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string, last, closed_key = False, '"', is_key
            continue
        if ch == '"':
            in_string, is_key = True, bool(stack) and stack[-1] == "{" and last in "{,"
            scalar = ""
        elif ch in "{[":
            stack.append(ch)
            last, scalar = ch, ""
        elif ch in "}]":
            if stack:
                stack.pop()
            last, scalar = ch, ""
        elif ch in ",:":
            last, scalar = ch, ""
        elif not ch.isspace():
            last, scalar = "v", scalar + ch
        elif scalar:
            scalar = ""
    out = ""
    if in_string:
        out += "0" * unicode_left + ("\\" if escape else "") + '"'
        if is_key:
            out += ":null"
    elif last == "v" and scalar:
        out += _finish_scalar(scalar)
    elif last == ":" or (last == '"' and closed_key):
        out += "null" if last == ":" else ":null"
    elif last == ",":
        out += '"":null' if stack and stack[-1] == "{" else "null"
    for opener in reversed(stack):
        out += "}" if opener == "{" else "]"
    return out


def _finish_scalar(text: str) -> str:
    for word in LITERALS:
        if word.startswith(text):
            return word[len(text) :]
    if text[-1] in "-+.eE":
        return "0"
    return ""
