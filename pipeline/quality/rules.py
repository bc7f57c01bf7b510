"""A small, safe rule language over an example's quality columns (no ``eval``).

Grammar (precedence low to high)::

    rule    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | NUMBER | NAME | "(" or ")"

``NAME`` is one of :data:`RULE_NAMES`. A rule is type-checked when it is parsed: the whole
rule must be true/false, ``and``/``or``/``not`` take comparisons, arithmetic takes numbers.
A comparison with NaN (a metric that could not be measured) is false; ``x / 0`` is NaN.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: the names a rule can use: the example table's quality columns and a few of its others
RULE_NAMES = (
    "peak_dbfs", "rms_dbfs", "loudness_lufs", "dc_offset", "clipping_fraction", "speech_fraction",
    "silence_fraction", "snr_db", "bandwidth_hz", "duration_seconds", "sample_rate", "sample_rate_original", "channels",
)
MAX_RULE_CHARS = 1000
MAX_DEPTH = 50

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><=|>=|==|!=|[<>()+\-*/]))")
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_KEYWORDS = ("and", "or", "not")


class RuleError(ValueError):
    """A rule that does not parse or type-check; the message says where and what to write."""


@dataclass(frozen=True)
class Rule:
    """A parsed rule: ``text`` as written, ``tree`` of tuples, ``names`` it reads."""

    text: str
    tree: tuple
    names: frozenset[str]

    def __call__(self, values: Mapping[str, Any]) -> bool:
        return bool(_eval(self.tree, values))


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            col = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise RuleError(f"unexpected character {text[col]!r} at column {col + 1} of `{text}`; a rule uses column names, numbers, "
                            "< <= > >= == !=, + - * /, and/or/not and parentheses")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind) + 1))
        pos = m.end()
    out.append(("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0
        self.names: set[str] = set()

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, what: str, tok: tuple[str, str, int]) -> RuleError:
        got = "the end of the rule" if tok[0] == "end" else f"`{tok[1]}`"
        return RuleError(f"expected {what} at column {tok[2]} of `{self.text}`, found {got}")

    def is_kw(self, word: str) -> bool:
        k, v, _ = self.peek()
        return k == "name" and v == word

    # each returns (tree, type) with type "bool" or "num"
    def parse_or(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError(f"`{self.text}` nests deeper than {MAX_DEPTH} levels; simplify it")
        left = self.parse_and()
        while self.is_kw("or"):
            tok = self.take()
            right = self.parse_and()
            left = ("or", self.need(left, "bool", tok), self.need(right, "bool", tok)), "bool"
        self.depth -= 1
        return left

    def parse_and(self):
        left = self.parse_not()
        while self.is_kw("and"):
            tok = self.take()
            right = self.parse_not()
            left = ("and", self.need(left, "bool", tok), self.need(right, "bool", tok)), "bool"
        return left

    def parse_not(self):
        if self.is_kw("not"):
            tok = self.take()
            return ("not", self.need(self.parse_not(), "bool", tok)), "bool"
        return self.parse_compare()

    def parse_compare(self):
        left = self.parse_sum()
        k, v, _ = self.peek()
        if k == "op" and v in _COMPARE:
            tok = self.take()
            right = self.parse_sum()
            return ("cmp", v, self.need(left, "num", tok), self.need(right, "num", tok)), "bool"
        return left

    def parse_sum(self):
        left = self.parse_product()
        while self.peek()[0] == "op" and self.peek()[1] in "+-":
            tok = self.take()
            right = self.parse_product()
            left = ("arith", tok[1], self.need(left, "num", tok), self.need(right, "num", tok)), "num"
        return left

    def parse_product(self):
        left = self.parse_unary()
        while self.peek()[0] == "op" and self.peek()[1] in "*/":
            tok = self.take()
            right = self.parse_unary()
            left = ("arith", tok[1], self.need(left, "num", tok), self.need(right, "num", tok)), "num"
        return left

    def parse_unary(self):
        tok = self.take()
        kind, value, col = tok
        if kind == "op" and value == "-":
            return ("neg", self.need(self.parse_unary(), "num", tok)), "num"
        if kind == "num":
            return ("num", float(value)), "num"
        if kind == "name" and value not in _KEYWORDS:
            if value not in RULE_NAMES:
                close = difflib.get_close_matches(value, RULE_NAMES, n=1, cutoff=0.6)
                hint = f"did you mean `{close[0]}`?" if close else f"use one of {', '.join(RULE_NAMES)}"
                raise RuleError(f"unknown column `{value}` at column {col} of `{self.text}`; {hint}")
            self.names.add(value)
            return ("name", value), "num"
        if kind == "op" and value == "(":
            inner = self.parse_or()
            if self.peek()[1] != ")" or self.peek()[0] != "op":
                raise self.fail("`)`", self.peek())
            self.take()
            return inner
        raise self.fail("a number, a column name or `(`", tok)

    def need(self, node, kind: str, tok) -> tuple:
        tree, typ = node
        if typ != kind:
            what = "a comparison (true/false)" if kind == "bool" else "a number"
            raise RuleError(f"`{tok[1]}` at column {tok[2]} of `{self.text}` needs {what} on each side")
        return tree


@lru_cache(maxsize=256)
def parse_rule(text: str) -> Rule:
    """Parse and type-check ``text``; raise :class:`RuleError` naming the column at fault."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError("a rule must be a non-empty string such as `snr_db < 5 or clipping_fraction > 0.01`")
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(f"a rule is at most {MAX_RULE_CHARS} characters (this one has {len(text)})")
    p = _Parser(text)
    tree, typ = p.parse_or()
    if p.peek()[0] != "end":
        raise p.fail("`and`, `or` or the end of the rule", p.peek())
    if typ != "bool":
        raise RuleError(f"`{text}` is a number, not a condition: compare it, e.g. `{text} > 0`")
    return Rule(text, tree, frozenset(p.names))


def _eval(node: tuple, values: Mapping[str, Any]) -> Any:
    op = node[0]
    if op == "num":
        return node[1]
    if op == "name":
        v = values.get(node[1])
        return float("nan") if v is None else float(v)
    if op == "neg":
        return -_eval(node[1], values)
    if op == "arith":
        a, b = _eval(node[2], values), _eval(node[3], values)
        if node[1] == "/":
            return a / b if b != 0 else float("nan")
        return _ARITH[node[1]](a, b)
    if op == "cmp":
        a, b = _eval(node[2], values), _eval(node[3], values)
        return False if (math.isnan(a) or math.isnan(b)) else _COMPARE[node[1]](a, b)
    if op == "not":
        return not _eval(node[1], values)
    if op == "and":
        return _eval(node[1], values) and _eval(node[2], values)
    if op == "or":
        return _eval(node[1], values) or _eval(node[2], values)
    raise AssertionError(op)
