"""One MindSpore export, every batch size: an ONNX graph exported at one fixed
batch size, rewritten for another.

MindSpore's ONNX exporter bakes the batch into the graph (DESIGN.md): the
input and output shapes and the target shapes of ``Reshape`` nodes (the SE
blocks' squeeze and excite). Exporting once per batch size compiles the
whole network again each time, the largest share of the main job's export
time. The rewrite changes exactly those numbers and nothing else: every
weight, every operator and its attributes stay as exported. It is refused
(``NotRebatchable``; the caller then exports from MindSpore) when the graph
holds a batch-sized constant the rule does not understand, or when ONNX's
shape inference does not end at the new batch on every output. The caller
also proves the rule numerically once per network (:func:`rows_agree`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# operators whose integer inputs are shapes (a batch could hide in them)
_SHAPE_CONSUMERS = {"Reshape", "Expand", "Tile", "ConstantOfShape", "Slice", "Resize", "Upsample"}


class NotRebatchable(Exception):
    """The graph cannot be rewritten safely; export it from the framework instead."""


def batch_of(model) -> int:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if not dims or not dims[0].HasField("dim_value"):
        raise NotRebatchable("the input has no fixed batch dimension")
    return dims[0].dim_value


def rebatch(src: Path, batch: int, out: Path) -> Path:
    """Write ``src`` (a fixed-batch ONNX graph) with batch size ``batch`` to ``out`` (.onnx added)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    old = batch_of(model)
    if len(graph.input) != 1:
        raise NotRebatchable(f"{len(graph.input)} graph inputs (one image input expected)")
    for vi in (*graph.input, *graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims or not dims[0].HasField("dim_value") or dims[0].dim_value != old:
            raise NotRebatchable(f"{vi.name!r} does not lead with the batch dimension {old}")
        dims[0].dim_value = batch
    del graph.value_info[:]  # shapes of the old batch: inferred again below

    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type not in _SHAPE_CONSUMERS:
            continue
        for name in node.input[1:]:
            holder = inits.get(name)
            const = producers.get(name)
            if const is not None and const.op_type == "Constant":
                holder = next((a.t for a in const.attribute if a.name == "value"), None)
            if holder is None:
                continue  # computed at run time from tensors (Shape -> ...): follows the batch by itself
            arr = numpy_helper.to_array(holder)
            if arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.size == 0:
                continue
            if node.op_type == "Reshape" and name == node.input[1] and arr[0] == old:
                new = arr.copy()
                new[0] = batch
                holder.CopyFrom(numpy_helper.from_array(new.astype(arr.dtype), holder.name))
            elif old != 1 and old in arr.tolist():
                raise NotRebatchable(f"a {node.op_type} node ({node.name or name}) holds the batch {old} in {arr.tolist()}")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError and friends
        raise NotRebatchable(f"shape inference fails on the rewritten graph: {str(exc).splitlines()[0][:200]}") from None
    for vi in inferred.graph.output:
        d0 = vi.type.tensor_type.shape.dim[0]
        if not d0.HasField("dim_value") or d0.dim_value != batch:
            raise NotRebatchable(f"output {vi.name!r} does not come out at batch {batch}")
    onnx.checker.check_model(model)
    path = out if out.suffix == ".onnx" else out.with_name(out.name + ".onnx")
    onnx.save(model, str(path))
    return path


def rows_agree(single: Path, batched: Path, *, seed: int = 0, rtol: float = 1e-4) -> bool:
    """Each row of the rewritten graph's output equals the original graph's
    output for that row alone (ONNX Runtime, CPU), on seeded random inputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    one = ort.InferenceSession(str(single), opts, providers=["CPUExecutionProvider"])
    many = ort.InferenceSession(str(batched), opts, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in many.get_inputs()[0].shape]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    name_one, name_many = one.get_inputs()[0].name, many.get_inputs()[0].name
    got = many.run(None, {name_many: x})[0]
    want = np.concatenate([one.run(None, {name_one: x[i:i + 1]})[0] for i in range(shape[0])])
    scale = float(np.abs(want).max()) or 1.0
    return got.shape == want.shape and float(np.abs(got - want).max()) <= rtol * scale
