"""Every ```python block of README.md and of the docs site (docs/**/*.md) runs, and checks its result.

The blocks of one page run in order, in one namespace, in a temporary folder (what an example
writes, `mnist.npz` say, lands there), as a reader would paste them into one session. A block that
must not run here (it needs PyTorch, a Dask cluster, or a long training) is fenced with another
language (```text, ```console, ```bash), never skipped: a ```python block is a promise that it runs.
Examples stay small (a slice of MNIST, a small net), so that the whole file takes seconds once
Numba's cache is warm.
"""

from __future__ import annotations

import ast
import linecache
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


class Block(NamedTuple):
    page: Path
    line: int  # 1-based line of the block's first code line in the page
    code: str


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a Markdown page, dedented when they sit in a list item."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opener = lines[i].strip()
        if opener.startswith("```"):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            fence = opener[: len(opener) - len(opener.lstrip("`"))]
            language = opener[len(fence):].strip()
            end = i + 1
            while end < len(lines) and lines[end].strip() != fence:
                end += 1
            if end == len(lines):
                raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: a ``` block that never closes")
            if language == "python":
                body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end]]
                blocks.append(Block(page, i + 2, textwrap.dedent("\n".join(body)) + "\n"))
            i = end
        i += 1
    return blocks


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_pages_are_found() -> None:
    """README and the kernel guide hold runnable examples; a glob that finds nothing must not pass."""
    ids = {page_id(page) for page in PAGES_WITH_CODE}
    assert "README.md" in ids
    assert "docs/kernels/njit.md" in ids


def test_readme_links_resolve() -> None:
    """README links into docs/ by relative paths, so that they work on GitHub; mkdocs checks the
    site's own links (--strict), this checks README's."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local, "README links into no page of the docs"
    missing = [link for link in local if not (ROOT / link).is_file()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=page_id)
def test_njit_examples_call_their_functions_and_check_them(page: Path) -> None:
    """An example that defines an @njit function must call it and assert on the result (issue 24:
    README's kernel examples once defined functions that nothing ever ran)."""
    blocks = python_blocks(page)
    calls = {node.func.id for block in blocks for node in ast.walk(ast.parse(block.code))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    for block in blocks:
        tree = ast.parse(block.code)
        compiled = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                    and any("njit" in ast.unparse(decorator) for decorator in node.decorator_list)]
        if not compiled:
            continue
        where = f"{page_id(page)}:{block.line}"
        for name in compiled:
            assert name in calls, f"{where}: the example defines @njit {name}() but never calls it"
        assert any(isinstance(node, ast.Assert) for node in ast.walk(tree)), \
            f"{where}: the example runs a kernel but checks nothing (assert its result against NumPy)"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=page_id)
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    filename = str(page)  # tracebacks then name the page and the line in it
    blocks = python_blocks(page)
    # What the traceback shows: the page's lines, blank outside its python blocks (dedented as run).
    shown = [""] * len(page.read_text(encoding="utf-8").splitlines())
    for block in blocks:
        for offset, line in enumerate(block.code.splitlines()):
            shown[block.line - 1 + offset] = line
    source = "\n".join(shown) + "\n"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    for block in blocks:
        exec(compile("\n" * (block.line - 1) + block.code, filename, "exec"), namespace)
