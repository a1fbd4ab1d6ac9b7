"""ONNX -> OM with CANN's `atc`, one static OM per batch size."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from harness.errors import UserError


def soc_version(chip_name: str) -> str:
    """`npu-smi info` chip name -> atc --soc_version ("310P3" -> "Ascend310P3")."""
    chip = chip_name.strip()
    if not chip:
        raise UserError("empty chip name", fix="run `npu-smi info` and pass the Name column")
    return chip if chip.startswith("Ascend") else f"Ascend{chip}"


def onnx_input_name(onnx_path: Path) -> str:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def build_command(onnx_path: Path, output_stem: Path, input_name: str, shape: tuple[int, ...],
                  soc: str, dynamic_batches: list[int] | None = None) -> list[str]:
    if dynamic_batches:
        dims = ",".join(str(d) for d in (-1, *shape[1:]))
        extra = [f"--dynamic_batch_size={','.join(str(b) for b in dynamic_batches)}"]
    else:
        dims = ",".join(str(d) for d in shape)
        extra = []
    return ["atc", f"--model={onnx_path}", "--framework=5", f"--output={output_stem}", "--input_format=NCHW",
            f"--input_shape={input_name}:{dims}", f"--soc_version={soc}", "--log=error", *extra]


def convert(cmd: list[str], output_stem: Path) -> Path:
    if shutil.which("atc") is None:
        raise UserError("atc not found on PATH",
                        fix="on a CANN host: source /usr/local/Ascend/ascend-toolkit/set_env.sh")
    p = subprocess.run(cmd, capture_output=True, text=True)
    om = Path(f"{output_stem}.om")
    if p.returncode != 0 or not om.is_file():
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-20:])
        raise UserError(f"atc failed (exit {p.returncode}): {shlex.join(cmd)}\n{tail}",
                        fix="read the atc log above; check --soc_version and the input shape")
    return om
