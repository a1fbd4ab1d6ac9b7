"""Convert a timm/Cadene PyTorch ``.pth`` into a mindcv-named MindSpore ``.ckpt``.

    python -m harness.models.convert in.pth seresnext50_32x4d out.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import ExitCode, UserError
from harness.models import mindspore_net as networks
from harness.models import weights
from harness.models.cards import CARDS


def convert(pth: str | Path, arch: str, out: str | Path, num_classes: int | None = None) -> Path:
    """Write a timm/Cadene ``.pth`` as a mindcv-named MindSpore ``.ckpt``; returns ``out``."""
    import mindspore as ms

    state = weights.read_torch_state_dict(pth)
    if num_classes is None:
        head = CARDS[arch].head_bias if arch in CARDS else None
        num_classes = int(state[head].shape[0]) if head in state else 1000
    net = networks.build_network(arch, num_classes)
    params = weights.fit_params(net, weights.timm_to_mindcv(arch, state), Path(pth))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(out))
    return out


def main(argv=None) -> int:

    p = argparse.ArgumentParser(prog="python -m harness.models.convert",
                                description="Convert a timm/Cadene PyTorch .pth into a mindcv-named MindSpore .ckpt")
    p.add_argument("pth")
    p.add_argument("arch", choices=sorted(weights.mapped_archs()))
    p.add_argument("out")
    p.add_argument("--num-classes", type=int)
    a = p.parse_args(argv)
    try:
        print(convert(a.pth, a.arch, a.out, a.num_classes))
    except UserError as exc:
        print(f"error: {exc}")
        return ExitCode.INPUT
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
