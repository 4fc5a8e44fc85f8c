"""The README's five-minute tour runs as printed: every expression whose REPL output the README
shows in a comment gives that output (training included: it is deterministic per seed on the CPU,
and the README quotes its numbers)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_source() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## A five-minute tour")
    block = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert block is not None, "the tour's python block is missing from README.md"
    return block.group(1)


def shown_outputs(source: str) -> list[tuple[ast.expr, str]]:
    """Each top-level expression with the comment text after it (inline, then the comment lines
    below it), whitespace removed: what the README says the REPL prints."""
    lines = source.splitlines()
    module = ast.parse(source)
    shown = []
    for statement in module.body:
        if not isinstance(statement, ast.Expr):
            continue
        comment = []
        inline = lines[statement.end_lineno - 1].split("#", 1)
        if len(inline) == 2:
            comment.append(inline[1])
        for line in lines[statement.end_lineno :]:
            if not line.lstrip().startswith("#"):
                break
            comment.append(line.lstrip()[1:])
        if comment:
            shown.append((statement.value, re.sub(r"\s+", "", "".join(comment))))
    return shown


@pytest.mark.slow
def test_the_tour_prints_what_the_readme_shows():
    source = tour_source()
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(source, "README.md", "exec"), namespace)  # ~20 s: the tour trains a model
    outputs = shown_outputs(source)
    assert len(outputs) >= 3
    for expression, comment in outputs:
        value = eval(compile(ast.Expression(expression), "README.md", "eval"), namespace)
        printed = re.sub(r"\s+", "", repr(value))
        assert printed in comment, f"README shows {comment!r}, the code gives {printed!r}"
    # "token-by-token decoding gives the same outputs"
    torch.testing.assert_close(namespace["steps"], namespace["full"], rtol=1e-5, atol=1e-5)
