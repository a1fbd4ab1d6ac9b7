"""ONNX -> OM with CANN's `atc`: one static OM per batch size, or one
dynamic-batch OM whose gears are picked at run time (ais_bench --dymBatch).

The exact command is written beside the OM (`<stem>.atc.json`) and returned
with the artifact, so a result can say how its model was made.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from harness.errors import UserError, log_tail
from harness.models import command_record
from harness.vocab import family_of_chip

# atc accepts 2 to 100 gears for --dynamic_batch_size.
MIN_GEARS, MAX_GEARS = 2, 100


def soc_version(chip_name: str) -> str:
    """`npu-smi info` chip name -> atc --soc_version ("310P3" -> "Ascend310P3").

    An unknown chip (e.g. 310B1 on an Atlas 200I) is an error: converting for
    a guessed SoC gives an OM that does not load, or runs slower than it should."""
    chip = chip_name.strip()
    if not chip:
        raise UserError("empty chip name", fix="run `npu-smi info` and pass the Name column")
    if family_of_chip(chip) is None:
        raise UserError(f"npu-smi info reports chip {chip!r}, which this harness does not know",
                        fix="run on a known chip, or add the chip to its family in harness/vocab.py")
    return chip if chip.startswith("Ascend") else f"Ascend{chip}"


def onnx_input_name(onnx_path: Path) -> str:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def check_gears(gears: list[int]) -> list[int]:
    g = sorted(set(int(x) for x in gears))
    if any(x < 1 for x in g) or not (MIN_GEARS <= len(g) <= MAX_GEARS):
        raise UserError(f"dynamic batch gears {gears} invalid: atc takes {MIN_GEARS} to {MAX_GEARS} distinct "
                        "positive batch sizes", fix="e.g. dynamic_batch: [1, 4, 8, 16, 32, 64]")
    return g


def build_command(onnx_path: Path, output_stem: Path, input_name: str, shape: tuple[int, ...],
                  soc: str, dynamic_batches: list[int] | None = None, log: str = "error") -> list[str]:
    """The atc command line. `output_stem` has no .om suffix (atc adds it)."""
    if str(output_stem).endswith(".om"):
        raise UserError("atc --output takes the name without .om", path=output_stem)
    if dynamic_batches:
        gears = check_gears(dynamic_batches)
        dims = ",".join(str(d) for d in (-1, *shape[1:]))
        extra = [f"--dynamic_batch_size={','.join(str(b) for b in gears)}"]
    else:
        dims = ",".join(str(d) for d in shape)
        extra = []
    return ["atc", f"--model={onnx_path}", "--framework=5", f"--output={output_stem}", "--input_format=NCHW",
            f"--input_shape={input_name}:{dims}", f"--soc_version={soc}", f"--log={log}", *extra]


def om_path(output_stem: Path) -> Path:
    return Path(f"{output_stem}.om")


def record_path(output_stem: Path) -> Path:
    return Path(f"{output_stem}.atc.json")


def convert(cmd: list[str], output_stem: Path, *, run=subprocess.run, which=shutil.which) -> Path:
    """Run atc; on failure raise UserError with the command and its log's tail."""
    if which("atc") is None:
        raise UserError("atc not found on PATH: no CANN environment",
                        fix="install the CANN toolkit and source /usr/local/Ascend/ascend-toolkit/set_env.sh")
    p = run(cmd, capture_output=True, text=True)
    om = om_path(output_stem)
    if p.returncode != 0 or not om.is_file():
        tail = log_tail((p.stdout or "") + (p.stderr or ""), 20, empty="(atc printed nothing)")
        why = f"exit {p.returncode}" if p.returncode != 0 else f"exit 0 but {om.name} was not written"
        raise UserError(f"atc failed ({why}): {shlex.join(cmd)}\n{tail}", path=om,
                        fix="read the atc log above; check --soc_version, the input name and shape "
                            "(more in ~/ascend/log with --log=info)")
    command_record.write(record_path(output_stem), cmd)
    return om


def recorded_command(output_stem: Path) -> str | None:
    """The command an existing OM was made with, if it was made by the harness."""
    return command_record.command(record_path(output_stem))
