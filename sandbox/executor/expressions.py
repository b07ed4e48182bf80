"""`{{...}}` substitution and `when` conditions, as Argo evaluates them, without eval().

A `when` condition is parsed by a small recursive-descent parser: `||`, `&&`, `!`, parentheses,
comparisons `== != < <= > >=`, quoted strings, numbers, `true`/`false` and bare words (Argo lets
`{{steps.a.outputs.parameters.verdict}} == fail` compare with the bare word `fail`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollguard.sandbox.executor.errors import ExpressionError, UnsupportedFeature

_REFERENCE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def yaml_text(value: Any) -> str:
    """A YAML scalar as the string Argo uses in a template (booleans as `true`/`false`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute(text: str, variables: Mapping[str, str], where: str) -> str:
    """Replace every `{{name}}` in `text` by its value; an unknown name is an error naming `where`."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("="):
            raise UnsupportedFeature("expression template {{=...}}", where, "use plain {{...}} references")
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise ExpressionError(f"{where}: unknown reference {{{{{name}}}}}; known here: {known}")
        return variables[name]

    return _REFERENCE.sub(replace, text)


@dataclass(frozen=True)
class _Token:
    kind: str  # "op", "str", "word", "num", "(", ")"
    text: str


_TOKEN = re.compile(
    r"\s*(?:(?P<op>&&|\|\||==|!=|<=|>=|=~|!~|<|>|!)|(?P<lp>\()|(?P<rp>\))"
    r"|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\"|(?P<num>-?\d+(?:\.\d+)?(?![\w.-]))|(?P<word>[A-Za-z_][\w.]*))"
)


def _tokenize(condition: str, where: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    stripped = condition.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if not match or match.end() == position:
            raise ExpressionError(f"{where}: cannot parse `when: {condition}` at {stripped[position:]!r}")
        position = match.end()
        if match.group("op"):
            if match.group("op") in ("=~", "!~"):
                raise UnsupportedFeature(f"regular-expression match {match.group('op')} in when", where)
            tokens.append(_Token("op", match.group("op")))
        elif match.group("lp"):
            tokens.append(_Token("(", "("))
        elif match.group("rp"):
            tokens.append(_Token(")", ")"))
        elif match.group("sq") is not None:
            tokens.append(_Token("str", match.group("sq")))
        elif match.group("dq") is not None:
            tokens.append(_Token("str", match.group("dq")))
        elif match.group("num"):
            tokens.append(_Token("num", match.group("num")))
        else:
            tokens.append(_Token("word", match.group("word")))
    return tokens


Value = str | float | bool


class _Parser:
    def __init__(self, tokens: list[_Token], condition: str, where: str) -> None:
        self.tokens = tokens
        self.index = 0
        self.condition = condition
        self.where = where

    def fail(self, why: str) -> ExpressionError:
        return ExpressionError(f"{self.where}: cannot evaluate `when: {self.condition}`: {why}")

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail("it ends too early")
        self.index += 1
        return token

    def parse(self) -> bool:
        value = self.parse_or()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]
        return self.truth(value)

    def parse_or(self) -> Value:
        value = self.parse_and()
        while (token := self.peek()) is not None and token.text == "||":
            self.take()
            right = self.parse_and()
            value = self.truth(value) or self.truth(right)
        return value

    def parse_and(self) -> Value:
        value = self.parse_not()
        while (token := self.peek()) is not None and token.text == "&&":
            self.take()
            right = self.parse_not()
            value = self.truth(value) and self.truth(right)
        return value

    def parse_not(self) -> Value:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == "!":
            self.take()
            return not self.truth(self.parse_not())
        return self.parse_comparison()

    def parse_comparison(self) -> Value:
        left = self.parse_atom()
        token = self.peek()
        if token is None or token.kind != "op" or token.text not in ("==", "!=", "<", "<=", ">", ">="):
            return left
        operator = self.take().text
        right = self.parse_atom()
        return self.compare(left, operator, right)

    def parse_atom(self) -> Value:
        token = self.take()
        if token.kind == "(":
            value = self.parse_or()
            if self.take().kind != ")":
                raise self.fail("a parenthesis is not closed")
            return value
        if token.kind == "num":
            return float(token.text)
        if token.kind == "word" and token.text in ("true", "false"):
            return token.text == "true"
        if token.kind in ("word", "str"):
            return token.text
        raise self.fail(f"unexpected {token.text!r}")

    def compare(self, left: Value, operator: str, right: Value) -> bool:
        """Compare as govaluate (Argo's `when` library) does: numbers with numbers, strings with strings.

        A quoted '10' stays a string: '9' < '10' is False (alphabetical) and '10' == 10 is False.
        """
        if operator in ("==", "!="):
            same = type(left) is type(right) and left == right
            return same if operator == "==" else not same
        if isinstance(left, float) and isinstance(right, float):
            a: Any = left
            b: Any = right
        elif isinstance(left, str) and isinstance(right, str):
            a, b = left, right
        else:
            raise self.fail(f"{operator} compares two numbers or two strings, got {left!r} and {right!r}")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[operator]

    def truth(self, value: Value) -> bool:
        if isinstance(value, bool):
            return value
        raise self.fail(f"{value!r} is not true or false; compare it, e.g. `{value} == something`")


def evaluate_when(condition: str, where: str) -> bool:
    """Truth of an already-substituted `when` condition; ExpressionError when it cannot be parsed."""
    return _Parser(_tokenize(condition, where), condition, where).parse()
