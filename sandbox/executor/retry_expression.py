"""`retryStrategy.expression`, evaluated as Argo evaluates it: the expr language, every variable a string.

Argo (workflow/controller/operator.go processNodeRetries, buildRetryStrategyLocalScope) evaluates
the expression with expr (github.com/expr-lang/expr since v3.5.5, antonmedv/expr before;
util/expr/argoexpr EvalBool) after a failed attempt, with the variables `retries`,
`lastRetry.exitCode` ("-1" when main never ran), `lastRetry.status`, `lastRetry.duration` and
`lastRetry.message` — all strings — and the functions asInt and asFloat (util/expr/env).

Locally a typed subset is parsed when the workflow loads: literals (numbers, 'single' or "double"
quoted strings, true, false), those variables, asInt/asFloat/int/float/string, parentheses,
`! not && and || or`, `== != < <= > >=` and `contains startsWith endsWith matches`. What expr
would get wrong silently is refused: `lastRetry.exitCode != 2` compares a string with a number,
so in Argo it is always true (expr's `==` of different types is false); write
`lastRetry.exitCode != "2"` or `asInt(lastRetry.exitCode) != 2`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rollguard.sandbox.executor.errors import ExecutorError, UnsupportedFeature

VARIABLES = ("retries", "lastRetry.exitCode", "lastRetry.status", "lastRetry.duration", "lastRetry.message")
_FUNCTIONS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "asInt": ("int", lambda value: int(str(value), 10)), "int": ("int", lambda value: int(value)),
    "asFloat": ("float", lambda value: float(value)), "float": ("float", lambda value: float(value)),
    "string": ("str", lambda value: str(value)),
}
_TOKEN = re.compile(
    r"\s*(?:(?P<op>&&|\|\||==|!=|<=|>=|<|>|!)|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)"
    r"|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\"|(?P<num>\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][\w.]*))"
)
_WORD_OPERATORS = {"and": "&&", "or": "||", "not": "!"}
_STRING_OPERATORS = ("contains", "startsWith", "endsWith", "matches")


@dataclass(frozen=True)
class _Node:
    kind: str  # "literal", "variable", "call", "not", "binary"
    type: str  # "str", "int", "float", "bool"
    value: Any = None
    children: tuple[_Node, ...] = ()


class RetryExpression:
    """A parsed, type-checked expression; `holds(scope)` evaluates it on one failed attempt's variables."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self._tokens = _tokenize(text, self._fail)
        self._index = 0
        self._tree = self._or()
        if self._index != len(self._tokens):
            raise self._fail(f"unexpected {self._tokens[self._index][1]!r}")
        if self._tree.type != "bool":
            raise self._fail(f"it gives a {self._tree.type}, not true or false")

    def holds(self, scope: Mapping[str, str]) -> bool:
        """The expression's truth for these variables (all strings, as Argo passes them)."""
        try:
            return bool(_evaluate(self._tree, scope))
        except (ValueError, re.error) as exc:  # argoexpr: "unable to evaluate expression '%s': %s"
            raise ExecutorError(f"{self.where}: unable to evaluate expression '{self.text}': {exc}") from None

    def _fail(self, why: str) -> ExecutorError:
        return ExecutorError(f"{self.where}: retryStrategy.expression `{self.text}`: {why}")

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise self._fail("it ends too early")
        self._index += 1
        return token

    def _or(self) -> _Node:
        left = self._and()
        while (token := self._peek()) is not None and token == ("op", "||"):
            self._take()
            left = self._logical("||", left, self._and())
        return left

    def _and(self) -> _Node:
        left = self._not()
        while (token := self._peek()) is not None and token == ("op", "&&"):
            self._take()
            left = self._logical("&&", left, self._not())
        return left

    def _not(self) -> _Node:
        if self._peek() == ("op", "!"):
            self._take()
            operand = self._not()
            if operand.type != "bool":
                raise self._fail(f"! needs true or false, not a {operand.type}")
            return _Node("not", "bool", children=(operand,))
        return self._comparison()

    def _comparison(self) -> _Node:
        left = self._atom()
        token = self._peek()
        comparison = token is not None and (
            (token[0] == "op" and token[1] in ("==", "!=", "<", "<=", ">", ">="))
            or (token[0] == "word" and token[1] in _STRING_OPERATORS))
        if not comparison:
            return left
        operator = self._take()[1]
        right = self._atom()
        numbers = {"int", "float"}
        if operator in _STRING_OPERATORS:
            if left.type != "str" or right.type != "str":
                raise self._fail(f"{operator} needs two strings, got a {left.type} and a {right.type}")
        elif left.type != right.type and not {left.type, right.type} <= numbers:
            raise self._fail(f"{operator} compares a {left.type} with a {right.type}; Argo's variables are strings, "
                             "so expr would never find them equal — compare with a quoted string "
                             '(lastRetry.exitCode != "2") or convert (asInt(lastRetry.exitCode) != 2)')
        elif operator not in ("==", "!=") and left.type == "bool":
            raise self._fail(f"{operator} cannot order true and false")
        return _Node("binary", "bool", operator, (left, right))

    def _atom(self) -> _Node:
        kind, text = self._take()
        if kind == "(":
            inner = self._or()
            if self._take()[0] != ")":
                raise self._fail("a parenthesis is not closed")
            return inner
        if kind == "str":
            return _Node("literal", "str", text)
        if kind == "num":
            return _Node("literal", "float" if "." in text else "int", float(text) if "." in text else int(text))
        if kind == "word" and text in ("true", "false"):
            return _Node("literal", "bool", text == "true")
        if kind == "word" and text in _FUNCTIONS and self._peek() == ("(", "("):
            self._take()
            argument = self._or()
            if self._take()[0] != ")":
                raise self._fail(f"{text}() takes one argument")
            return _Node("call", _FUNCTIONS[text][0], text, (argument,))
        if kind == "word" and text in VARIABLES:
            return _Node("variable", "str", text)
        if kind == "word":
            raise UnsupportedFeature(f"{text} in retryStrategy.expression", self.where,
                                     f"the local executor knows {', '.join(VARIABLES)} and {', '.join(_FUNCTIONS)}")
        raise self._fail(f"unexpected {text!r}")

    def _logical(self, operator: str, left: _Node, right: _Node) -> _Node:
        if left.type != "bool" or right.type != "bool":
            raise self._fail(f"{operator} needs true or false on both sides")
        return _Node("binary", "bool", operator, (left, right))


def _tokenize(text: str, fail: Callable[[str], ExecutorError]) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position, stripped = 0, text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if not match or match.end() == position:
            raise fail(f"cannot parse it at {stripped[position:]!r}")
        position = match.end()
        if match.group("op"):
            tokens.append(("op", match.group("op")))
        elif match.group("lp") or match.group("rp"):
            tokens.append(("(", "(") if match.group("lp") else (")", ")"))
        elif match.group("comma"):
            raise fail("functions here take one argument")
        elif match.group("sq") is not None or match.group("dq") is not None:
            tokens.append(("str", match.group("sq") if match.group("sq") is not None else match.group("dq")))
        elif match.group("num"):
            tokens.append(("num", match.group("num")))
        elif match.group("word") in _WORD_OPERATORS:
            tokens.append(("op", _WORD_OPERATORS[match.group("word")]))
        else:
            tokens.append(("word", match.group("word")))
    return tokens


def _evaluate(node: _Node, scope: Mapping[str, str]) -> Any:
    if node.kind == "literal":
        return node.value
    if node.kind == "variable":
        return scope[node.value]
    if node.kind == "call":
        return _FUNCTIONS[node.value][1](_evaluate(node.children[0], scope))
    if node.kind == "not":
        return not _evaluate(node.children[0], scope)
    left = _evaluate(node.children[0], scope)
    if node.value == "&&":
        return left and _evaluate(node.children[1], scope)
    if node.value == "||":
        return left or _evaluate(node.children[1], scope)
    right = _evaluate(node.children[1], scope)
    operations: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "contains": lambda a, b: b in a,
        "startsWith": lambda a, b: a.startswith(b), "endsWith": lambda a, b: a.endswith(b),
        "matches": lambda a, b: re.search(b, a) is not None,
    }
    return operations[node.value](left, right)
