"""One export, every batch size: the batch rewrite of a fixed-batch ONNX graph
(harness/models/onnx_batch.py), on graphs built here with the shapes
MindSpore's exporter writes (an SE block's Reshape to [B, C, 1, 1])."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.models import onnx_batch


def se_like(path, batch: int, *, tile_batch: bool = False):
    """conv -> global mean -> Reshape([B, C]) -> gemm -> Reshape([B, C, 1, 1]) -> sigmoid -> mul."""
    rng = np.random.default_rng(1)
    c = 4
    w = numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((c, c)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["y"], ["m"], axes=[2, 3], keepdims=1),
        helper.make_node("Constant", [], ["s1"], value=numpy_helper.from_array(np.array([batch, c], np.int64), "s1v")),
        helper.make_node("Reshape", ["m", "s1"], ["m2"]),
        helper.make_node("Gemm", ["m2", "fc"], ["g"]),
        helper.make_node("Constant", [], ["s2"], value=numpy_helper.from_array(np.array([batch, c, 1, 1], np.int64), "s2v")),
        helper.make_node("Reshape", ["g", "s2"], ["g4"]),
        helper.make_node("Sigmoid", ["g4"], ["e"]),
        helper.make_node("Mul", ["y", "e"], ["z"]),
        helper.make_node("ReduceMean", ["z"], ["out"], axes=[2, 3], keepdims=0),
    ]
    inits = [w, fc]
    if tile_batch:  # a batch-sized constant in an operator the rule does not rewrite
        inits.append(numpy_helper.from_array(np.array([1, batch], np.int64), "reps"))
        nodes.append(helper.make_node("Tile", ["out", "reps"], ["tiled"]))
    out_name = "tiled" if tile_batch else "out"
    out_shape = [batch, c * batch] if tile_batch else [batch, c]
    graph = helper.make_graph(nodes, "se_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_rewritten_graph_gives_each_row_as_the_single_image_graph(tmp_path):
    one = se_like(tmp_path / "bs1.onnx", 1)
    for b in (2, 5, 64):
        out = onnx_batch.rebatch(one, b, tmp_path / f"bs{b}")
        m = onnx.load(str(out))
        assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == b
        assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_value == b
        assert onnx_batch.rows_agree(one, out, seed=b)
    # the weights are the export's own, byte for byte
    src, dst = onnx.load(str(one)), onnx.load(str(tmp_path / "bs5.onnx"))
    assert [i.SerializeToString() for i in src.graph.initializer] == [i.SerializeToString() for i in dst.graph.initializer]


def test_rows_agree_sees_a_wrong_rewrite(tmp_path):
    """The numerical check can fail: a graph that mixes the rows (a batch-wide
    mean) is not the single-image graph row for row."""
    one = se_like(tmp_path / "bs1.onnx", 1)
    two = onnx_batch.rebatch(one, 2, tmp_path / "bs2")
    m = onnx.load(str(two))
    last = m.graph.node[-1]
    last.output[0] = "pre"
    m.graph.node.append(helper.make_node("ReduceMean", ["pre"], ["mixed"], axes=[0], keepdims=1))
    m.graph.node.append(helper.make_node("Expand", ["mixed", "shp"], ["out"]))
    m.graph.initializer.append(numpy_helper.from_array(np.array([2, 4], np.int64), "shp"))
    onnx.save(m, str(tmp_path / "mixed.onnx"))
    assert not onnx_batch.rows_agree(one, tmp_path / "mixed.onnx")


def test_a_batch_constant_the_rule_does_not_know_is_refused(tmp_path):
    two = se_like(tmp_path / "bs2.onnx", 2, tile_batch=True)
    with pytest.raises(onnx_batch.NotRebatchable, match="Tile"):
        onnx_batch.rebatch(two, 4, tmp_path / "bs4")


def test_a_graph_without_a_fixed_batch_is_refused(tmp_path):
    one = se_like(tmp_path / "bs1.onnx", 1)
    m = onnx.load(str(one))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(m, str(tmp_path / "dyn.onnx"))
    with pytest.raises(onnx_batch.NotRebatchable, match="no fixed batch"):
        onnx_batch.rebatch(tmp_path / "dyn.onnx", 4, tmp_path / "bs4")
