"""Image statuses and job states are spelled once, in their enums: no module retypes them as strings."""

from __future__ import annotations

import ast
from pathlib import Path

from core.catalog.models import JobState, Status

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("core", "gateway", "cli", "tui")
WORDS = frozenset(s.value for s in Status) | frozenset(s.value for s in JobState)
# The modules that define the vocabulary (or, for jobs, its historic aliases).
DEFINING = frozenset(
    {"core/catalog/vocabulary.py", "core/catalog/models.py", "core/rules/lifecycle.py", "core/jobs/jobs.py"}
)
# Other vocabularies that happen to share a word: (module, word) -> what the word means there.
OTHER_MEANINGS = {
    ("core/catalog/errors.py", "failed"): "ImagehubError.reason, the kind of an error",
    ("core/compute/drivers.py", "running"): "a VM's status as its driver reports it",
    ("gateway/admin_ssh.py", "deleted"): "an account was deleted (a message)",
    ("cli/jobs.py", "failed"): "the outcome shown when a failed import left no reason (a message)",
}
# Marked for translation (`N_("available")`, `_("failed")`): English text shown to people, not a status.
MESSAGE_MARKERS = frozenset({"N_", "_"})


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _messages(tree: ast.Module) -> set[int]:
    return {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in MESSAGE_MARKERS
        and node.args
    }


def retyped_words(path: Path) -> list[tuple[int, str]]:
    """(line, word) of every string constant in `path` that is an image status or a job state (not a docstring,
    not a message marked for translation)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstrings(tree) | _messages(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in WORDS
        and id(node) not in docstrings
    )


def test_statuses_and_job_states_come_from_their_enums():
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in DEFINING:
                continue
            found += [
                f"{name}:{line}: {word!r}" for line, word in retyped_words(path) if (name, word) not in OTHER_MEANINGS
            ]
    assert found == [], "use core.catalog.models.Status / JobState (or core.jobs.jobs) instead of:\n" + "\n".join(found)


def test_the_scan_sees_string_literals_but_not_docstrings(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""available, in a docstring."""\n'
        "def f(state):\n"
        '    """running, in a docstring."""\n'
        '    return state == "running" or state in ("queued", "done") or N_("failed")\n'
    )
    assert retyped_words(sample) == [(4, "done"), (4, "queued"), (4, "running")]
