"""What a run selects, what it says when that is nothing, and the exit code it ends with.

``--harness-model NAME`` and ``--harness-batch-size N`` (``harness run --model``,
``--batch-size``) select exactly and are repeatable, beside pytest's own -m and -k.
A selection that matches no case exits 5 (NOTHING_SELECTED, as pytest's own "no
tests collected"), naming the selection, any marker or model it names that does
not exist, and the ones that do.

Exit codes: :func:`exit_code` maps pytest's outcomes onto the one table
(:class:`harness.errors.ExitCode`), for `pytest suites` and `harness run` alike.
"""

from __future__ import annotations

import re

import pytest

from harness.errors import ExitCode
from harness.plugin.options import input_errors

_SELECTION_KEY = pytest.StashKey[dict]()
# the words of a -m expression that are not marker names
_MARKEXPR_WORDS = {"and", "or", "not", "True", "False"}


def selection(config) -> dict:
    """What the harness learnt while collecting: suites seen, models and batch sizes among their cases."""
    return config.stash.setdefault(_SELECTION_KEY, {"suites": 0, "models": set(), "batch_sizes": set()})


def saw_suite(config) -> None:
    selection(config)["suites"] += 1


def deselect(config, items: list, case_of) -> None:
    """Drop the cases --harness-model / --harness-batch-size leave out (pytest's -m and -k do their own)."""
    models = config.getoption("--harness-model")
    sizes = config.getoption("--harness-batch-size")
    seen = selection(config)
    keep, drop = [], []
    for item in items:
        case = case_of(item)
        if case is None:
            keep.append(item)
            continue
        seen["models"].add(case.suite.model)
        if case.batch_size is not None:
            seen["batch_sizes"].add(case.batch_size)
        wanted = (not models or case.suite.model in models) and (not sizes or case.batch_size in sizes)
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def unknown_markers(config) -> list[str]:
    """The words of -m that name no registered marker (a misspelling selects nothing, silently, in pytest)."""
    expr = config.getoption("markexpr", "") or ""
    words = re.findall(r"[A-Za-z_][\w.-]*", re.sub(r"\([^)]*\)", " ", expr))  # kwargs in (...) dropped
    known = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    return sorted({w for w in words if w not in _MARKEXPR_WORDS and w not in known})


def selection_notes(config, harness_markers) -> list[str]:
    """What is wrong with the selection: unknown markers, models, batch sizes (with the valid ones)."""
    seen = selection(config)
    notes = []
    bad = unknown_markers(config)
    if bad:
        notes.append(f"-m names no known marker: {', '.join(bad)}; markers: {', '.join(harness_markers)}")
    models = [m for m in config.getoption("--harness-model") or () if m not in seen["models"]]
    if models:
        notes.append(f"--model {', '.join(models)}: no suite of that model here; models: "
                     f"{', '.join(sorted(seen['models'])) or 'none'}")
    sizes = [str(b) for b in config.getoption("--harness-batch-size") or () if b not in seen["batch_sizes"]]
    if sizes:
        notes.append(f"--batch-size {', '.join(sizes)}: no case of that batch size; batch sizes: "
                     f"{', '.join(map(str, sorted(seen['batch_sizes']))) or 'none'}")
    return notes


def describe(config) -> str:
    """The selection in words, as the user typed it: "-m 'cpu' and --model xception"."""
    parts = [f"{opt} {config.getoption(name)!r}" for opt, name in (("-m", "markexpr"), ("-k", "keyword"))
             if config.getoption(name, "")]
    parts += [f"--model {m}" for m in config.getoption("--harness-model") or ()]
    parts += [f"--batch-size {b}" for b in config.getoption("--harness-batch-size") or ()]
    return " and ".join(parts)


def nothing_selected_lines(config, harness_markers) -> list[str]:
    where = ", ".join(config.args) or "."
    sel = describe(config)
    return [f"error: no case selected from {where}{' with ' + sel if sel else ''} "
            f"(exit {ExitCode.NOTHING_SELECTED:d})", *(f"  {n}" for n in selection_notes(config, harness_markers))]


# pytest's outcomes (pytest.ExitCode) on the harness's table
_PYTEST_TO_HARNESS = {
    pytest.ExitCode.OK: ExitCode.OK,
    pytest.ExitCode.TESTS_FAILED: ExitCode.FAILED,
    pytest.ExitCode.INTERRUPTED: ExitCode.FAILED,  # Ctrl-C, SIGTERM: the run is marked interrupted
    pytest.ExitCode.INTERNAL_ERROR: ExitCode.FAILED,  # pytest or a plugin broke: the run did not pass
    pytest.ExitCode.USAGE_ERROR: ExitCode.USAGE,
    pytest.ExitCode.NO_TESTS_COLLECTED: ExitCode.NOTHING_SELECTED,
}


def exit_code(config, rc: int) -> int:
    """The run's exit code on the harness's table. Bad input (3) wins over failed cases: the
    verdict is incomplete until the input is fixed. Codes pytest does not use pass unchanged."""
    if input_errors(config):
        return int(ExitCode.INPUT)
    try:
        return int(_PYTEST_TO_HARNESS.get(pytest.ExitCode(rc), rc))
    except ValueError:
        return int(rc)
