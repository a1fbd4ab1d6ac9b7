"""No password is printed or stored, in any form a store may be named with.

Each form goes through every command that takes a store, against a real
PostgreSQL server (tests/pg_server.py) and against an unreachable one; every
line printed and every file written (reports, JSON, CSV, bundles, the journal,
the store's own records) is searched for the secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from harness.cli import main
from harness.errors import ExitCode
from harness.results.masking import mask
from harness.results.store import Store
from tests.conftest import REPO, color_classifier, write
from tests.pg_server import PASSWORD

SUITE = """\
    schema_version: 1
    model: toy
    source: {kind: onnx, path: ../../toy.onnx, num_classes: 3}
    input: {size: 32, preprocess: imagenet_resize256_crop224}
    export: [onnx]
    targets:
      - {name: host, device: cpu, runner: "null", format: onnx, batch_sizes: [1], stages: [throughput]}
    """
FAKE = "Unr3achable-S3cretQ"  # the password of a server that is not there


def forms(port: int, db: str, pw: str) -> dict[str, tuple[str, str | None]]:
    """name -> (store spec, PGPASSWORD needed beside it)."""
    return {
        "userinfo": (f"postgresql://harness:{quote(pw)}@127.0.0.1:{port}/{db}", None),
        "query password=": (f"postgresql://harness@127.0.0.1:{port}/{db}?password={quote(pw)}", None),
        "query sslpassword=": (f"postgresql://harness@127.0.0.1:{port}/{db}?sslmode=disable&sslpassword={quote(pw)}",
                               PASSWORD),
        "keyword/value DSN": (f"host=127.0.0.1 port={port} dbname={db} user=harness password='{pw}'", None),
    }


def test_mask_covers_every_form():
    for name, (spec, _) in forms(5432, "d", FAKE).items():
        assert FAKE not in mask(f"error: {spec}: cannot open") and "***" in mask(spec), name
    assert mask("password = 'a b\\' c' host=x") == "password = *** host=x"
    assert mask("postgresql://u:p%40ss@h/d") == "postgresql://u:***@h/d"


def _files_text(root: Path) -> str:
    out = []
    for p in root.rglob("*"):
        if p.is_file() and p.suffix != ".onnx":
            out.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def _commands(spec: str, out: Path) -> list[list[str]]:
    return [["show", "--store", spec], ["report", "--store", spec, "--out", str(out / "r.html")],
            ["gate", "--store", spec, "--json", str(out / "g.json")], ["compare", "--list", "--store", spec],
            ["export", "--format", "csv", "--store", spec, "--out", str(out / "x.csv")],
            ["bundle", "--store", spec, "--out", str(out / "b.json")], ["claims", "--store", spec],
            ["replay", "--store", spec], ["import", "--store", spec, str(out / "b.json")]]


def _harness_run(project: Path, spec: str | None, env: dict) -> str:
    args = [sys.executable, "-m", "harness", "run", "suites"] + (["--store", spec] if spec else [])
    e = {**os.environ, "PYTHONPATH": str(REPO), **env}
    e.pop("PYTEST_ADDOPTS", None)
    p = subprocess.run(args, cwd=project, env=e, capture_output=True, text=True, timeout=300)
    return p.stdout + p.stderr


CASES = [(f, False) for f in forms(1, "d", "x")] + [("query password=", True), ("keyword/value DSN", True)]


@pytest.mark.parametrize(("form", "via_env"), CASES,
                         ids=[f"{f} {'$HARNESS_STORE' if e else '--store'}" for f, e in CASES])
def test_no_secret_printed_or_stored(pg_server, tmp_path, capsys, monkeypatch, form, via_env):
    project = tmp_path / "p"
    project.mkdir()
    color_classifier(project / "toy.onnx")
    write(project / "suites" / "toy" / "suite.yaml", textwrap.dedent(SUITE))
    db = pg_server.create_database()[len("postgresql://harness@"):].split("/")[-1]
    printed = []
    for pw, port in ((PASSWORD, pg_server.port), (FAKE, 1)):
        spec, pgpass = forms(port, db, pw)[form]
        env = {"PGPASSWORD": pgpass or ""}
        if via_env:
            env["HARNESS_STORE"] = spec
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        printed.append(_harness_run(project, None if via_env else spec, env))
        out = tmp_path / f"out-{port}"
        out.mkdir()
        for args in _commands(spec, out):
            if via_env:  # the store from $HARNESS_STORE alone
                i = args.index("--store")
                args = args[:i] + args[i + 2:]
            rc = main(args)
            assert rc != ExitCode.OK or port != 1, args  # an unreachable server is an error, never a silent pass
            c = capsys.readouterr()
            printed.append(c.out + c.err)
        if port == pg_server.port:
            s = Store(spec)
            stored = str(s.runs()) + str([r.to_dict() for r in s.results()])
            s.close()
            assert via_env or "***" in stored  # the command line is kept, masked
            printed.append(stored)
    text = "\n".join(printed) + _files_text(tmp_path)
    assert "Traceback" not in text
    assert "127.0.0.1:1/" in text  # the unreachable server was named ...
    for secret in (PASSWORD, FAKE, quote(PASSWORD), quote(FAKE)):
        assert secret not in text, (form, secret)  # ... and no password, anywhere
