"""Small ONNX models built with onnx.helper, written into a test's temporary repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gateway.protocol.datatypes import DATATYPES

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="gateway-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def write_model(repository: Path, name: str, version: int, graph: onnx.GraphProto) -> Path:
    return _save(graph, repository / name / str(version) / "model.onnx")


def write_config(repository: Path, name: str, text: str) -> None:
    (repository / name).mkdir(parents=True, exist_ok=True)
    (repository / name / "model.toml").write_text(text)


def identity_all_types() -> onnx.GraphProto:
    """One Identity per datatype: input ``in_<DT>`` [batch, 3] -> output ``out_<DT>``."""
    nodes, inputs, outputs = [], [], []
    for datatype in DATATYPES:
        kind = ONNX_TYPES[datatype]
        nodes.append(helper.make_node("Identity", [f"in_{datatype}"], [f"out_{datatype}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{datatype}", kind, ["batch", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{datatype}", kind, ["batch", 3]))
    return helper.make_graph(nodes, "identity_all_types", inputs, outputs)


def scaled_sum(scale: float = 1.0) -> onnx.GraphProto:
    """Two inputs: ``a`` FP32 [batch, 4] and ``b`` INT64 [batch, 4] -> ``sum`` = (a + b) * scale,
    and ``first`` = a[:, 0] (a second output for output selection)."""
    scale_init = numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale")
    index = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["added"]),
        helper.make_node("Mul", ["added", "scale"], ["sum"]),
        helper.make_node("Gather", ["a", "zero"], ["first"], axis=1),
    ]
    return helper.make_graph(
        nodes,
        "scaled_sum",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("first", TensorProto.FLOAT, ["batch"]),
        ],
        initializer=[scale_init, index],
    )


def fixed_shape() -> onnx.GraphProto:
    """No batch dimension: ``x`` FP32 [2, 3] -> ``y`` = -x."""
    return helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])],
        "fixed_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )


def lookup() -> onnx.GraphProto:
    """``index`` INT64 [batch] -> ``value`` from a table of 4: indices outside 0..3 make
    onnxruntime fail at run time, which the gateway must answer cleanly."""
    table = numpy_helper.from_array(np.array([10, 20, 30, 40], dtype=np.float32), "table")
    return helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["value"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch"])],
        initializer=[table],
    )


def slow(layers: int = 6, width: int = 1024) -> onnx.GraphProto:
    """``x`` FP32 [batch, 16] through ``layers`` MatMuls of width ``width``: about
    2 * layers * width^2 FLOP per row, so a batch of a few hundred rows keeps a core busy."""
    rng = np.random.default_rng(7)
    w_in = (rng.standard_normal((16, width)) / 4).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceSum", [f"h{layers}", "axes"], ["y"], keepdims=0))
    return helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        initializer=[
            numpy_helper.from_array(w_in, "w_in"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )


def slow_sum(scale: float = 1.0, layers: int = 10, width: int = 2048) -> onnx.GraphProto:
    """``scaled_sum``'s signature and answers, after a heavy computation that it multiplies by
    zero: a deliberately slow version of the same model (several ms per row)."""
    graph = scaled_sum(scale)
    rng = np.random.default_rng(11)
    w_in = (rng.standard_normal((4, width)) / 2).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["a", "w_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"h{layers}", "axis1"], ["heavy"], keepdims=1),
        helper.make_node("Mul", ["heavy", "nothing"], ["zeroed"]),
        helper.make_node("Add", ["sum_light", "zeroed"], ["sum"]),
    ]
    for node in graph.node:
        if list(node.output) == ["sum"]:
            node.output[0] = "sum_light"
    graph.node.extend(nodes)
    graph.initializer.extend(
        [
            numpy_helper.from_array(w_in, "w_in"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "nothing"),
        ]
    )
    return graph


def failing_sum() -> onnx.GraphProto:
    """``scaled_sum``'s signature, but 'first' looks ``a[:, 0]`` up in a table of one entry:
    fine for the zeros of the warm-up, a run-time error for any row whose a[0] is not 0."""
    graph = scaled_sum(1.0)
    for node in list(graph.node):
        if list(node.output) == ["first"]:
            graph.node.remove(node)
    graph.node.extend(
        [
            helper.make_node("Gather", ["a", "zero"], ["a0"], axis=1),
            helper.make_node("Cast", ["a0"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["first"], axis=0),
        ]
    )
    graph.initializer.append(numpy_helper.from_array(np.array([7.0], dtype=np.float32), "table"))
    return graph


def scalar_scale() -> onnx.GraphProto:
    """A rank-0 input and output: ``x`` FP32 [] and ``v`` FP32 [batch, 2] -> ``y`` = 2 * x
    (FP32 []) and ``scaled`` = v * x (FP32 [batch, 2])."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    return helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["y"]),
            helper.make_node("Mul", ["v", "x"], ["scaled"]),
        ],
        "scalar_scale",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 2]),
        ],
        initializer=[two],
    )


def text_echo() -> onnx.GraphProto:
    """One BYTES input: ``text`` [batch] -> ``echo``, the same strings."""
    return helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "text_echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"])],
    )


def write_slow_sum_model(repository: Path) -> None:
    """``slowsum`` version 1 (``slow_sum``) on one thread, 4 rows a batch and a queue of
    1,000: slow enough that a drain test finds requests queued and running."""
    write_model(repository, "slowsum", 1, slow_sum(1.0))
    write_config(
        repository,
        "slowsum",
        "[runtime]\nintra_op_threads = 1\ninstances = 1\n"
        "[batching]\nmax_batch_size = 4\nmax_queue_size = 1000\n",
    )
