"""The Python snippets in docs/ run as written (the README's tour has tests/test_readme.py)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def snippets(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("name", ["schemes.md", "shaw.md"])
def test_every_python_snippet_runs(name):
    found = snippets(DOCS / name)
    assert found, f"docs/{name} has no python snippet"
    namespace = {}  # one page's snippets run in order, as a reader pastes them into a session
    for code in found:
        exec(compile(code, f"docs/{name}", "exec"), namespace)
