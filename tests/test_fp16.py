"""fp16 conversion of graphs whose weights live in external data (the sd2 UNets are past protobuf's 2 GB)."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from stablemtl_edge.fp16 import convert_to_fp16


def _graph_with_external_weights(path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32) * 0.1, "w")
    b = numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["z"], axis=-1),
             helper.make_node("Add", ["z", "b"], ["y"])]  # softmax stays fp32 inside, as in the UNets
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)


def test_external_data_graph_converts_with_shapes_inferred_from_the_file(tmp_path):
    src, dst = tmp_path / "fp32" / "m.onnx", tmp_path / "fp16" / "m.onnx"
    src.parent.mkdir()
    _graph_with_external_weights(src)
    assert convert_to_fp16(src, dst) is None  # small enough for one protobuf
    assert sorted(p.name for p in src.parent.iterdir()) == ["m.onnx", "m.onnx.data"]  # no scratch file left
    half = onnx.load(str(dst))
    assert {t.data_type for t in half.graph.initializer} == {TensorProto.FLOAT16}
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref, got = run(src), run(dst)
    assert got.dtype == np.float32 and np.abs(got - ref).max() < 2e-3  # I/O stays fp32
