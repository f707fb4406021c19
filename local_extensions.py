"""Jinja filters that write a free-text answer into a file in that file's own syntax.

cookiecutter loads them (AnswerFilters) through `_extensions` in cookiecutter.json. The
answers they take (project_name, description, author_name) are single lines: the
pre-generation hook refuses control characters, so no filter here meets a line break.
"""

import json
import re

from jinja2.ext import Extension

# Characters that start inline Markdown syntax (or an HTML entity) wherever they stand.
MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>|~&])")
# What makes a line a heading, quote, list item or rule when it starts the line.
MARKDOWN_LINE_START = re.compile(r"^(\s*\d*)((?<=\d)[.)]|(?<!\d)[#>+=-])")


def toml_string(value: str) -> str:
    """A TOML basic string, quotes included: JSON's escapes are all valid TOML escapes."""
    return json.dumps(value, ensure_ascii=False)


def docstring_text(value: str) -> str:
    """Text that cannot end a triple-quoted Python string or start an escape sequence."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def markdown_text(value: str) -> str:
    """Text that Markdown shows as written, never as markup."""
    escaped = MARKDOWN_INLINE.sub(r"\\\1", value)
    return MARKDOWN_LINE_START.sub(r"\1\\\2", escaped)


class AnswerFilters(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        environment.filters.update(
            toml_string=toml_string, docstring_text=docstring_text, markdown_text=markdown_text
        )
