"""Free-text answers reach every generated file intact, in that file's own syntax."""

import ast
import json
import tomllib

import pytest
import yaml
from markdown_it import MarkdownIt

from local_extensions import markdown_text

from .conftest import bake

HOSTILE = {
    "quotes": {"description": 'He said "hi" and \'bye\'', "author_name": 'Anne "Nan" O\'Brien'},
    "backslashes": {"description": "C:\\new\\table, then a trailing \\",
                    "author_name": "Back\\slash"},
    "markup": {"project_name": "2. Fast & <Furious>",
               "description": "# *Not* a [link](x) <b>bold</b> &copy; | `code` ~~x~~ _y_"},
    "international": {"project_name": "Café Service",
                      "description": "Überwachung für alle — 日本語の説明",
                      "author_name": "Zoë Ångström"},
    "config-syntax": {"project_name": "Ops: #1 {braces}",
                      "description": "key = 'value' # not a comment: [table] {a: b}, - item"},
}  # fmt: skip
# The default slug and package name come from the name, whatever it holds.
DERIVED_NAMES = {
    "Café Service": "cafe-service",
    "Service 2.0": "service-2-0",
    "2048 Game": "service-2048-game",
    "Ops: #1 {braces}": "ops-1-braces",
    "!!!": "service",
}


def shown_by_markdown(line: str) -> tuple[str, str]:
    """The kind of block a Markdown line makes, and its text; fails on any inline markup."""
    block, inline, _ = MarkdownIt("commonmark").parse(line)
    assert [child.type for child in inline.children] == ["text"], inline.children
    return block.type, inline.children[0].content


@pytest.fixture(params=HOSTILE, ids=str)
def hostile(request, cookies):
    answers = HOSTILE[request.param]
    result = bake(cookies, answers)
    assert result.exit_code == 0, result.exception
    return result.project_path, {**result.context, **answers}


def test_metadata_reaches_pyproject_as_written(hostile):
    path, answers = hostile
    project = tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["description"] == answers["description"]
    assert project["authors"] == [{"name": answers["author_name"],
                                   "email": answers["author_email"]}]  # fmt: skip


def test_python_files_parse_and_keep_the_text(hostile):
    path, answers = hostile
    for source in path.rglob("*.py"):
        ast.parse(source.read_text(encoding="utf-8"), str(source))
    package = path / "src" / answers["package_name"] / "__init__.py"
    assert (
        ast.get_docstring(ast.parse(package.read_text(encoding="utf-8")))
        == (answers["description"])
    )
    gunicorn_conf = ast.parse((path / "gunicorn.conf.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(gunicorn_conf).startswith(
        f"gunicorn settings for {answers['project_name']}."
    )


def test_markdown_shows_the_text_as_written(hostile):
    path, answers = hostile
    title, _, description = (path / "README.md").read_text(encoding="utf-8").split("\n")[:3]
    assert shown_by_markdown(title) == ("heading_open", answers["project_name"])
    assert shown_by_markdown(description) == ("paragraph_open", answers["description"])


def test_grafana_files_name_the_service_as_written(hostile):
    path, answers = hostile
    grafana = path / "monitoring" / "grafana"
    dashboard = next((grafana / "dashboards").glob("*.json"))
    assert json.loads(dashboard.read_text(encoding="utf-8"))["title"] == answers["project_name"]
    provisioning = yaml.safe_load((grafana / "provisioning/dashboards/dashboards.yml").read_text())
    assert provisioning["providers"][0]["folder"] == answers["project_name"]


@pytest.mark.parametrize(("name", "slug"), DERIVED_NAMES.items())
def test_any_name_gives_a_valid_slug_and_package(cookies, name, slug):
    result = bake(cookies, {"project_name": name})
    assert result.exit_code == 0, result.exception
    assert result.context["project_slug"] == slug
    assert result.context["package_name"] == slug.replace("-", "_")


@pytest.mark.parametrize(
    ("text", "markdown"),
    [
        ("2. Fast", "2\\. Fast"),
        ("- item", "\\- item"),
        ("a*b_c", "a\\*b\\_c"),
        ("Café 2.0 (beta)", "Café 2.0 (beta)"),  # nothing to escape: left readable
    ],
)
def test_markdown_escapes_only_what_markdown_would_read_as_markup(text, markdown):
    assert markdown_text(text) == markdown
