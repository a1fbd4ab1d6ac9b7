"""Unusable store paths at the command line (issue 11, item 3): one short error
naming the store and exit 3 (the README's "bad input"), not one error per case,
and no traceback. The store itself is being rewritten (issue 12); the cases
today's store does not meet yet are marked xfail(strict) with that reason."""

from __future__ import annotations

import sqlite3

import pytest

from harness.errors import ExitCode
from tests.conftest import color_classifier
from tests.test_bad_input_cli import assert_clean, harness, seen, toy_suite

pytest.importorskip("onnxruntime")

REWRITE = "store rewrite (issue 12) in flight"


def _good(tmp_path, project):
    good = tmp_path / "good.sqlite"
    p = harness("run", "suites", "--store", good, cwd=project)
    assert p.returncode == 0, seen(p)
    return good


def _truncated(path, tmp_path, project):
    data = _good(tmp_path, project).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _real(path, tmp_path, project, version: str):
    """A real store whose format_version reads ``version``, in rollback-journal mode."""
    good = _good(tmp_path, project)
    db = sqlite3.connect(good)
    db.execute("UPDATE meta SET value=? WHERE key='format_version'", (version,))
    db.commit()
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    path.write_bytes(good.read_bytes())


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    color_classifier(root / "toy.onnx")
    toy_suite(root, batch_sizes="[1, 2]")  # three cases: one error each would show
    return root


NEEDLES = {"a directory": "directory", "not SQLite": "not a results store", "truncated SQLite": "corrupt",
           "newer format": "format version 999", "non-integer format version": "format version"}
# what today's store does not meet yet (each checked strictly: an unexpected pass fails)
TODAY: set = set()  # every case is met since the store rewrite (issue 12)


@pytest.mark.parametrize("kind", list(NEEDLES))
@pytest.mark.parametrize("command", ["run", "report", "gate", "bundle"])
def test_unusable_store_is_one_short_error_and_exit_3(project, tmp_path, kind, command, request):
    if (command, kind) in TODAY:
        request.applymarker(pytest.mark.xfail(strict=True, reason=REWRITE))
    needle = NEEDLES[kind]
    store = tmp_path / "store.sqlite"
    if kind == "a directory":
        store.mkdir()
    elif kind == "not SQLite":
        store.write_text("these are my notes, not a database\n")
    elif kind == "truncated SQLite":
        _truncated(store, tmp_path, project)
    elif kind == "newer format":
        _real(store, tmp_path, project, "999")
    else:
        _real(store, tmp_path, project, "one")
    before = store.read_bytes() if store.is_file() else None
    args = {"run": ["run", "suites"], "report": ["report", "--out", tmp_path / "r.html"], "gate": ["gate"],
            "bundle": ["bundle", "--out", tmp_path / "b.json"]}[command]
    p = harness(*args, "--store", store, cwd=project)
    assert_clean(p, ExitCode.INPUT, str(store.name), needle)
    assert seen(p).count(needle) <= 2, seen(p)  # once (run: and in its closing line), not once per case
    if before is not None:
        assert store.read_bytes() == before  # a store that is not usable is left as it was
