"""Model cards: what the harness knows per architecture, in one place.

In the spirit of timm's ``register_model`` / ``pretrained_cfg``: a card names
the reference implementation (timm), the default preprocessing, the
published parameter count, the construction fixes that make the MindSpore
network compute the reference's function and export to ONNX, and the
rules that rename the reference's weights onto mindcv's parameter names.

Any mindcv classifier works without a card (``card_for`` returns a plain
one: no fixes, no weight mapping), so ``source: {kind: mindcv, arch:
resnet18}`` builds, exports and benchmarks with no code change. A card adds
what an architecture needs beyond that; the three documented architectures
are the three cards below. A new card is one ``register_card(ModelCard(...))``
call, in this module or in a plugin package.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.errors import UserError
from harness.models import mindspore_fixes as fx

#: (regex, replacement) applied in order to each reference parameter name
WeightRules = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class ModelCard:
    arch: str  # mindcv's name
    reference: str | None = None  # the timm model computing the same function
    preprocess: str | None = None  # default recipe (harness.data.recipes)
    input_size: int | None = None
    params_m: float | None = None  # published trainable parameters, millions
    params_source: str | None = None
    # construction fixes: fix(net) mutates mindcv's network in place, never
    # renaming a parameter (build_network checks)
    fix: Callable[[Any], None] | None = None
    weight_rules: WeightRules = ()
    # one characteristic key per naming (reference, mindcv), to say which
    # model a checkpoint that fits nothing was made for
    signature: tuple[str, ...] = ()
    # the reference's classifier bias key (its length is num_classes)
    head_bias: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def maps_weights(self) -> bool:
        return bool(self.weight_rules)


CARDS: dict[str, ModelCard] = {}


def register_card(card: ModelCard) -> ModelCard:
    CARDS[card.arch] = card
    return card


def mindcv_archs() -> list[str]:
    """Every classifier mindcv can build (imports mindcv, and so MindSpore)."""
    try:
        from mindcv.models import list_models
    except ImportError as exc:
        raise UserError(f"mindcv is not installed ({exc})",
                        fix="pip install 'modelzoo-harness[mindspore]' (mindspore, mindcv)") from None
    return list(list_models())


def card_for(arch: str, *, check: bool = True) -> ModelCard:
    """The card for ``arch``; a plain card for any other mindcv architecture.

    With ``check``, an architecture neither carded nor known to mindcv is a
    UserError naming the nearest names.
    """
    if arch in CARDS:
        return CARDS[arch]
    if check:
        known = mindcv_archs()
        if arch not in known:
            near = _near(arch, [*CARDS, *known])
            raise UserError(f"unknown source.arch {arch!r}" + (f"; did you mean {', '.join(near)}?" if near else ""),
                            fix=f"use a mindcv model name (mindcv.models.list_models()); carded: {', '.join(CARDS)}")
    return ModelCard(arch)


def _near(name: str, names: list[str]) -> list[str]:
    """Likely meant: names equal up to underscores or extending it ("se_resnext50" ->
    "seresnext50_32x4d"), carded names first, then difflib's close matches."""
    norm = name.replace("_", "").lower()
    prefix = [n for n in names if n.replace("_", "").lower().startswith(norm)]
    close = difflib.get_close_matches(name, names, n=3)
    return list(dict.fromkeys([*prefix, *close]))[:3]


def reference_of(arch: str) -> str:
    """The timm model for a harness architecture name (timm names pass through)."""
    card = CARDS.get(arch)
    return card.reference if card and card.reference else arch


def guess_arch(keys) -> str | None:
    """The carded architecture whose characteristic keys a checkpoint holds, if any."""
    keys = list(keys)
    for card in CARDS.values():
        if any(k.startswith(mark) for mark in card.signature for k in keys):
            return card.arch
    return None


# -- SE-ResNeXt50 (32x4d) ---------------------------------------------------------------
def _fix_seresnext(net) -> None:
    # Reference: nn.MaxPool2d(3, stride=2, ceil_mode=True). For a 3x3/2
    # window, one extra -FLT_MAX row/column at the bottom/right gives
    # ceil((H-3)/2)+1 outputs for every H, and the extra row is never a
    # window's only content.
    net.pool0 = fx.cells()["PaddedMaxPool2d"](3, 2, (0, 1, 0, 1))


register_card(ModelCard(
    arch="seresnext50_32x4d", reference="legacy_seresnext50_32x4d", preprocess="timm_legacy_seresnext50_32x4d",
    input_size=224, params_m=27.56, params_source="timm results CSVs (REFERENCE.md)", fix=_fix_seresnext,
    weight_rules=(
        (r"^layer0\.conv1\.", "layer0.0."),
        (r"^layer0\.bn1\.", "layer0.1."),
        (r"\.se_module\.fc1\.", ".se_module.conv_reduce."),
        (r"\.se_module\.fc2\.", ".se_module.conv_expand."),
        (r"^last_linear\.", "classifier."),
    ),
    signature=("layer0.conv1.weight", "layer0.0.weight", "layer1.0.se_module."),
    head_bias="last_linear.bias",
))


# -- Xception -------------------------------------------------------------------------
def _fix_xception(net) -> None:
    # Reference: nn.MaxPool2d(3, stride, padding=1) at the end of each strided block.
    from mindspore import nn

    pool_cls = fx.cells()["PaddedMaxPool2d"]
    n = 0
    for block in net.blocks:
        last = len(block.rep) - 1
        if isinstance(block.rep[last], nn.MaxPool2d):
            block.rep[last] = pool_cls(3, 2, (1, 1, 1, 1))
            n += 1
    if n != 4:
        raise RuntimeError(f"expected 4 strided max pools in mindcv's xception, found {n}")


register_card(ModelCard(
    arch="xception", reference="legacy_xception", preprocess="timm_legacy_xception", input_size=299,
    params_m=22.86, params_source="timm results CSVs; paper: 22,855,952 (REFERENCE.md)", fix=_fix_xception,
    weight_rules=(
        (r"^block(\d+)\.", lambda m: f"blocks.{int(m.group(1)) - 1}."),
        (r"^fc\.", "classifier."),
    ),
    signature=("block1.skip.weight", "blocks.0.skip.weight"),
    head_bias="fc.bias",
))


# -- EfficientNet-B0 --------------------------------------------------------------------
def _fix_efficientnet(net) -> None:
    # The MBConv shortcut is added in place (`result += x`), which the ONNX
    # exporter rejects ("InplaceAddExt"); stride-2 "same" convolutions pad
    # unevenly where the reference pads k//2 on both sides.
    from mindcv.models.efficientnet import MBConv

    n_blocks = 0
    for _, cell in net.cells_and_names():
        if type(cell) is MBConv:
            cell.__class__ = fx.cells()["OutOfPlaceMBConv"]
            n_blocks += 1
    n_convs = fx.symmetric_stride2_convs(net)
    if n_blocks != 16 or n_convs != 5:
        raise RuntimeError(f"expected 16 MBConv blocks and 5 stride-2 convolutions in mindcv's efficientnet_b0, "
                           f"found {n_blocks} and {n_convs}")


def _effnet_block(m: re.Match) -> str:
    stage, idx, layer = int(m.group(1)), m.group(2), m.group(3)
    if stage == 0:  # depthwise-separable stage
        order = {"conv_dw": 0, "bn1": 1, "se": 3, "conv_pw": 4, "bn2": 5}
    else:  # inverted-residual stages
        order = {"conv_pw": 0, "bn1": 1, "conv_dw": 3, "bn2": 4, "se": 6, "conv_pwl": 7, "bn3": 8}
    if layer not in order:
        return m.group(0)
    return f"features.{stage + 3}.{idx}.block.{order[layer]}."


register_card(ModelCard(
    arch="efficientnet_b0", reference="efficientnet_b0", preprocess="timm_efficientnet_b0", input_size=224,
    params_m=5.29, params_source="timm; paper (arXiv 1905.11946): 5.3 M (REFERENCE.md)", fix=_fix_efficientnet,
    weight_rules=(
        (r"^conv_stem\.", "features.0."),
        (r"^bn1\.", "features.1."),
        (r"^conv_head\.", "features.10."),
        (r"^bn2\.", "features.11."),
        (r"^classifier\.", "mlp_head."),
        (r"^blocks\.(\d+)\.(\d+)\.(\w+)\.", _effnet_block),
    ),
    signature=("conv_stem.weight", "blocks.0.0.conv_dw.weight", "features.3.0.block.0.weight"),
    head_bias="classifier.bias",
))
