"""The grammar of arithmetic answers: whitelisted tokens and a small tree, read as sympy would
read the same text (Python's precedence; ``^`` is a power, right-associative; juxtaposition
multiplies, as sympy's ``implicit_multiplication``). Grammar only: nothing is evaluated or
bounded here (that is :mod:`winnow.answers.expr`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["CONSTANTS", "FUNCTIONS", "MAX_DEPTH", "Node", "parse", "sympy_source", "tokens"]

MAX_DEPTH = 40  # nesting of parentheses / operators

_TOKEN_RE = re.compile(r"\d++(?:\.\d*+)?+|\.\d++|[A-Za-z]++|[-+*/^()]|\s++")  # unambiguous
FUNCTIONS = ("sqrt", "ln", "log", "exp", "sin", "cos", "tan")
CONSTANTS = ("pi", "oo", "e", "i")


class _Malformed(Exception):
    """Not an answer this grammar reads."""


@dataclass(slots=True)
class Node:
    kind: str  # num, sym, const, neg, add, sub, mul, div, pow, call
    args: tuple[Node, ...] = ()
    value: Fraction | None = None  # num
    name: str = ""  # sym, const, call


def tokens(text: str) -> list[str] | None:
    """The whitelisted tokens of ``text`` (whitespace dropped), or None if a character or a word
    is outside the whitelist (single letters, :data:`FUNCTIONS`, :data:`CONSTANTS`)."""
    found = _TOKEN_RE.findall(text)
    if sum(map(len, found)) != len(text):
        return None
    out = []
    for token in found:
        if token.isspace():
            continue
        if token[0].isalpha() and len(token) > 1 and token not in FUNCTIONS + CONSTANTS:
            return None
        out.append(token)
    return out


def sympy_source(toks: Sequence[str]) -> str:
    """The tokens as sympy's input (the answer worker's): single-letter variables renamed
    ``v_x`` (no clash with sympy names such as ``S``, ``N`` or ``E``); function and constant
    names as they are."""
    out = []
    for token in toks:
        if token[0].isalpha():
            out.append(f" {token} " if len(token) > 1 or token in "ei" else f" v_{token} ")
        else:
            out.append(token)
    return "".join(out).strip()


def parse(toks: list[str]) -> Node | None:
    """The tree of a token list, or None when it is not a well-formed expression."""
    if not toks:
        return None
    parser = _Parser(toks)
    try:
        node = parser.expr(0)
    except (_Malformed, RecursionError, ValueError, ZeroDivisionError):
        return None
    return node if parser.at == len(toks) else None


# ---------------------------------------------------------------------------------------------
# sympy's parse_expr with implicit multiplication and ^ for powers, on these tokens


class _Parser:
    def __init__(self, toks: list[str]) -> None:
        self.toks = toks
        self.at = 0

    def peek(self) -> str | None:
        return self.toks[self.at] if self.at < len(self.toks) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _Malformed
        self.at += 1
        return token

    def expr(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise _Malformed
        node = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            node = Node("add" if op == "+" else "sub", (node, self.term(depth)))
        return node

    def term(self, depth: int) -> Node:
        node = self.unary(depth)
        while True:
            token = self.peek()
            if token in ("*", "/"):
                self.take()
                node = Node("mul" if token == "*" else "div", (node, self.unary(depth)))
            elif token is not None and (token == "(" or token[0].isalnum() or token[0] == "."):
                node = Node("mul", (node, self.power(depth)))  # juxtaposition: 2x, 2(3), x y
            else:
                return node

    def unary(self, depth: int) -> Node:
        token = self.peek()
        if token in ("-", "+"):
            self.take()
            if depth > MAX_DEPTH:
                raise _Malformed
            inner = self.unary(depth + 1)
            return Node("neg", (inner,)) if token == "-" else inner
        return self.power(depth)

    def power(self, depth: int) -> Node:
        base = self.atom(depth)
        if self.peek() == "^":
            self.take()
            return Node("pow", (base, self.unary(depth + 1)))  # right-associative, as **
        return base

    def atom(self, depth: int) -> Node:
        token = self.take()
        if token == "(":
            inner = self.expr(depth + 1)
            if self.take() != ")":
                raise _Malformed
            return inner
        if token[0].isdigit() or token[0] == ".":
            return Node("num", value=Fraction(token))
        if token in FUNCTIONS:
            if self.take() != "(":
                raise _Malformed  # sin x, sqrt2: sympy does not read these either
            argument = self.expr(depth + 1)
            if self.take() != ")":
                raise _Malformed
            return Node("call", (argument,), name=token)
        if token in CONSTANTS:
            return Node("const", name=token)
        if token[0].isalpha():
            return Node("sym", name=token)
        raise _Malformed
