"""Render a PromQL template's `{{ name }}` placeholders safely for where each one stands.

The template is scanned as PromQL is: inside "double" or 'single' quotes a value is escaped for that
quote (backslash, the quote, newline), so it cannot end the string; inside a `raw` string (no escapes
exist) a value with a backtick is refused; outside any string, and in # comments, only a plain
token (a name, a number, a duration like 1m) may stand — anything else could become PromQL.
"""

from __future__ import annotations

import re

from rollguard.steps.metrics.promql import escape_quoted

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9_.:]+$")
_QUOTES = "\"'`"


class TemplateError(ValueError):
    """The template cannot be rendered safely; the message names the place and the fix."""


def render_template(template: str, variables: dict[str, str], where: str) -> str:
    """Substitute every placeholder, escaped for its quoting; unknown, malformed or unsafe ones are errors."""
    rendered: list[str] = []
    quote = ""  # the quote of the string we are in, "" outside strings
    in_comment = False
    index = 0
    while index < len(template):
        if template.startswith("{{", index):
            match = PLACEHOLDER.match(template, index)
            if match is None:
                raise TemplateError(f"{where}: malformed placeholder; write variables as {{{{ name }}}}")
            rendered.append(_value_for(match.group(1), variables, quote, in_comment, where))
            index = match.end()
            continue
        if template.startswith("}}", index):
            raise TemplateError(f"{where}: malformed placeholder; write variables as {{{{ name }}}}")
        character = template[index]
        if in_comment:
            in_comment = character != "\n"
        elif not quote:
            quote = character if character in _QUOTES else ""
            in_comment = character == "#"
        elif character == "\\" and quote != "`":
            rendered.append(template[index:index + 2])  # an escape in the template itself
            index += 2
            continue
        elif character == quote:
            quote = ""
        rendered.append(character)
        index += 1
    if quote:
        raise TemplateError(f"{where}: a {quote}string{quote} is not closed")
    return "".join(rendered)


def _value_for(name: str, variables: dict[str, str], quote: str, in_comment: bool, where: str) -> str:
    if name not in variables:
        known = ", ".join(sorted(variables))
        raise TemplateError(f"{where}: unknown variable {{{{ {name} }}}}; known variables: {known}")
    value = variables[name]
    if quote == "`":
        if "`" in value:
            raise TemplateError(f"{where}: the value of {{{{ {name} }}}} holds a backtick, which a `raw string` "
                                f'cannot hold; quote the placeholder with double quotes: "{{{{ {name} }}}}"')
        return value
    if quote:
        return escape_quoted(value, quote)
    if not PLAIN_TOKEN.match(value):
        place = "in a # comment" if in_comment else "outside a quoted string"
        raise TemplateError(f"{where}: {{{{ {name} }}}} stands {place}, where only a plain name, number or "
                            f"duration is safe, and its value {value!r} is not one; put it in a label value: "
                            f'label="{{{{ {name} }}}}"')
    return value
