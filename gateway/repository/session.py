"""onnxruntime sessions: the only module that imports onnxruntime.

Everything here blocks; callers run it in an executor.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gateway.errors import ConfigError, InferenceFailed, InvalidRequest
from gateway.packages import KEEP_GPU
from gateway.protocol.datatypes import NUMPY_DTYPES, ONNX_TO_DATATYPE
from gateway.protocol.signature import Signature, TensorSpec
from gateway.repository.spec import RuntimeSection

log = logging.getLogger("gateway.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_PREFERRED = (CUDA, CPU)
_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_INVALID_ARGUMENT = ort.capi.onnxruntime_pybind11_state.InvalidArgument


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The requested providers that this onnxruntime build has, always ending with CPU."""
    wanted = list(requested) if requested is not None else list(_PREFERRED)
    chosen = [p for p in wanted if p in available]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def provider_shortfall(
    requested: Sequence[str] | None, running: Sequence[str], available: Sequence[str]
) -> str | None:
    """Why the providers ``[runtime] providers`` asks for outright are not all running
    (None when they are, or when none were asked for: then CUDA is used if it is there)."""
    if requested is None:
        return None
    missing = [p for p in requested if p not in running]
    if not missing:
        return None
    message = (
        f"[runtime] providers asks for {', '.join(missing)}, but it runs on {', '.join(running)}"
    )
    absent = [p for p in missing if p not in available]
    if absent:
        message += f": this onnxruntime has no {', '.join(absent)} (it has {', '.join(available)})"
        if CUDA in absent:
            message += f"; for CUDA install onnxruntime-gpu in place of onnxruntime: {KEEP_GPU}"
    else:
        message += (
            f": {', '.join(missing)} is in this onnxruntime but did not start (for CUDA: no "
            "GPU visible to this process, or CUDA/cuDNN libraries that onnxruntime-gpu "
            "needs are missing)"
        )
    return message


class OnnxModel:
    """``instances`` inference sessions of one model file, and the signature they share."""

    def __init__(self, path: Path, runtime: RuntimeSection) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = runtime.intra_op_threads
        options.inter_op_num_threads = runtime.inter_op_threads
        options.graph_optimization_level = _OPTIMIZATION[runtime.graph_optimization_level]
        options.log_severity_level = 3  # onnxruntime's own warnings go through our log lines
        available = ort.get_available_providers()
        providers = choose_providers(runtime.providers, available)
        try:
            model_bytes = path.read_bytes()
            self.sha256 = hashlib.sha256(model_bytes).hexdigest()
            self.sessions = [
                ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
                for _ in range(runtime.instances)
            ]
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
        except Exception as exc:  # onnxruntime raises its own types for every bad model
            raise ConfigError(f"{path}: onnxruntime cannot load it: {_short(exc)}") from None
        first = self.sessions[0]
        self.providers: list[str] = first.get_providers()
        shortfall = provider_shortfall(runtime.providers, self.providers, available)
        if shortfall is not None:
            log.warning("%s: %s", path, shortfall)
        self.signature = Signature(
            inputs=tuple(_spec(path, arg) for arg in first.get_inputs()),
            outputs=tuple(_spec(path, arg) for arg in first.get_outputs()),
        )

    def run(
        self, instance: int, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> list[np.ndarray]:
        feeds = {name: _as_text(name, a) if a.dtype == object else a for name, a in inputs.items()}
        try:
            outputs: list[np.ndarray] = self.sessions[instance].run(list(output_names), feeds)
            return outputs
        except _INVALID_ARGUMENT as exc:
            raise InvalidRequest(f"the model rejected the inputs: {_short(exc)}") from None
        except Exception as exc:  # a failed run must fail its request, not the server
            raise InferenceFailed(f"inference failed: {_short(exc)}") from None

    def warm_up(self) -> None:
        """One inference per session with zeros of batch size 1, before any traffic."""
        sample = {spec.name: _zeros(spec) for spec in self.signature.inputs}
        names = self.signature.output_names
        for instance in range(len(self.sessions)):
            try:
                self.run(instance, sample, names)
            except (InvalidRequest, InferenceFailed) as exc:
                raise ConfigError(f"warm-up inference failed: {exc.message}") from None


def _spec(path: Path, arg: ort.NodeArg) -> TensorSpec:
    datatype = ONNX_TO_DATATYPE.get(arg.type)
    if datatype is None:
        raise ConfigError(
            f"{path}: tensor '{arg.name}' has type {arg.type}, which the gateway cannot serve "
            f"(supported: {', '.join(sorted(ONNX_TO_DATATYPE))})"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _as_text(name: str, array: np.ndarray) -> np.ndarray:
    """onnxruntime's string tensors hold UTF-8 text: BYTES elements are decoded, strictly."""
    flat = array.ravel().tolist()
    try:
        text = [v.decode() if isinstance(v, bytes) else v for v in flat]
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"input '{name}': BYTES elements must be UTF-8 text for an ONNX string tensor; "
            f"got bytes that are not ({exc.reason} at byte {exc.start})"
        ) from None
    converted = np.empty(len(text), dtype=object)
    converted[:] = text
    return converted.reshape(array.shape)


def _zeros(spec: TensorSpec) -> np.ndarray:
    shape = tuple(1 if d == -1 else d for d in spec.shape)
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    # onnxruntime prefixes "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : "
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return text if len(text) <= 500 else text[:497] + "..."
