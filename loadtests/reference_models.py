"""The two benchmark models, built with onnx.helper from a fixed seed (never shipped as files).

- ``mlp``:  FP32 [batch, 64]  -> Gemm 256 -> Relu -> Gemm 256 -> Relu -> Gemm 10 -> Softmax
  (cheap to run: the HTTP path dominates)
- ``wide``: FP32 [batch, 512] -> Gemm 2048 -> Relu -> Gemm 2048 -> Relu -> Gemm 1000
  (expensive to run: the model dominates, batching pays)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20261126
SHAPES = {
    "mlp": (64, [256, 256, 10], True),
    "wide": (512, [2048, 2048, 1000], False),
}


def build(name: str) -> onnx.ModelProto:
    width, layers, softmax = SHAPES[name]
    rng = np.random.default_rng(SEED)
    nodes, initializers = [], []
    current, fan_in = "input", width
    for index, fan_out in enumerate(layers):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{index}"),
            numpy_helper.from_array(bias, f"b{index}"),
        ]
        output = f"gemm{index}"
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [output]))
        current, fan_in = output, fan_out
        if index < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{index}"]))
            current = f"relu{index}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [current], ["output"], axis=-1))
    else:
        nodes.append(helper.make_node("Identity", [current], ["output"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", layers[-1]])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def input_width(name: str) -> int:
    return SHAPES[name][0]


def write_repository(root: Path, max_batch_size: int, max_queue_delay_ms: float = 2.0) -> Path:
    """Both models as version 1, one onnxruntime thread each, with the given batching."""
    for name in SHAPES:
        version_dir = root / name / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(build(name), version_dir / "model.onnx")
        (root / name / "model.toml").write_text(
            "[runtime]\nintra_op_threads = 1\ninter_op_threads = 1\n\n"
            f"[batching]\nmax_batch_size = {max_batch_size}\n"
            f"max_queue_delay_ms = {max_queue_delay_ms}\nmax_queue_size = 4096\n"
        )
    return root
