"""The annotations make a type checker catch wrong calls of the public API: mypy flags exactly the
marked lines of tests/typing/wrong_calls.py and accepts tests/typing/right_calls.py. (.ci/run also
type-checks the package itself.)"""

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")  # in the dev extra, so CI runs these

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = ROOT / "tests" / "typing"


def run_mypy(path):
    stdout, stderr, status = mypy_api.run(["--config-file", str(ROOT / "pyproject.toml"), "--no-error-summary",
                                           "--hide-error-context", str(path)])
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    return status, errors, stdout + stderr


def test_mypy_flags_every_wrong_call_of_the_public_api_and_nothing_else():
    path = SNIPPETS / "wrong_calls.py"
    marked = {i for i, line in enumerate(path.read_text().splitlines(), 1) if "  # wrong:" in line}
    status, errors, output = run_mypy(path)
    flagged = {int(line.split(":")[1]) for line in errors}
    assert status == 1 and len(marked) >= 15
    assert flagged == marked, output


def test_mypy_accepts_right_calls_of_the_public_api():
    status, errors, output = run_mypy(SNIPPETS / "right_calls.py")
    assert status == 0 and not errors, output
