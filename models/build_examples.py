#!/usr/bin/env python3
"""Regenerate the example model repository that ships with the gateway.

Run it as::

    .venv/bin/python models/build_examples.py [--out DIR]

``DIR`` defaults to the folder this script lives in, so a plain run rewrites
the checked-in examples in place.  It writes::

    DIR/digits/model.toml
    DIR/digits/1/model.onnx      LogisticRegression on load_digits()
    DIR/digits/2/model.onnx      small MLP on the same split, same signature
    DIR/fraud/model.toml
    DIR/fraud/1/model.onnx       GradientBoosting on a synthetic per-user table
    DIR/fraud/entities.csv       the first 1,000 users of that table (no label)
    DIR/*/N/profile.json         each version's drift profile, from its training inputs

Why this script exists rather than just the binaries: the .onnx files are
artefacts, and reviewers must be able to see (and reproduce) exactly how they
were made.  Everything is therefore seeded, single-threaded where threading
could change floating-point summation order, and serialised deterministically,
so running the script twice yields byte-identical files (compare with
``sha256sum``).  "Identical" holds for one set of library versions: a newer
scikit-learn, skl2onnx or onnx may train or serialise slightly differently
(skl2onnx also stamps its own version into ``producer_version``), so expect
new hashes after upgrading those.

Only data bundled with scikit-learn or generated with numpy is used, so the
script works offline.  Its dependencies are the ``examples`` extra of the
project (``pip install -e '.[examples]'``) plus onnxruntime, which the
gateway itself depends on and which is used here to check every export.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import ModelProto, TensorProto
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # installed with scikit-learn

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# --------------------------------------------------------------------------
# Fixed knobs.  Every source of randomness is pinned here so the artefacts are
# reproducible; change a seed and the models (and their hashes) change.
# --------------------------------------------------------------------------
DIGITS_SPLIT_SEED = 0
DIGITS_CV_SEED = 0
DIGITS_MLP_SEED = 0
FRAUD_DATA_SEED = 20240611
FRAUD_SPLIT_SEED = 0
FRAUD_MODEL_SEED = 0
TEST_SIZE = 0.25

FRAUD_N_USERS = 5_000
FRAUD_CSV_USERS = 1_000
FRAUD_FEATURES: tuple[str, ...] = (
    "age",
    "account_age_days",
    "balance",
    "txn_count_7d",
    "avg_txn_amount",
    "chargebacks_90d",
)

# ai.onnx 17 / ai.onnx.ml 3 are both supported by onnxruntime >= 1.17 (the
# gateway's floor).  skl2onnx treats these as ceilings and may emit lower
# versions where an operator has not changed since.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
# IR version 8 is what ONNX opset 17 maps to; onnxruntime 1.17 reads up to IR 9.
# Pinned explicitly so a newer onnx package cannot silently bump it.
IR_VERSION = 8

# Name of the symbolic leading dimension.  Clients see it as the shape
# ['batch', ...] from onnxruntime and as -1 in the inference protocols.
BATCH_DIM = "batch"

# Maximum tolerated |onnxruntime - sklearn.predict_proba|.  ONNX runs in
# float32 while scikit-learn computes in float64, so exact equality is not
# expected; 1e-4 is far below anything that matters for a probability.
MAX_ABS_DIFF = 1e-4


@dataclass(frozen=True)
class OutputSpec:
    """One graph output to keep: the name skl2onnx gives it -> the public name."""

    source: str
    name: str
    elem_type: int
    trailing_dims: tuple[int, ...]


@dataclass(frozen=True)
class Report:
    path: Path
    accuracy: float
    max_abs_diff: float
    size: int
    sha256: str


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def digits_split() -> tuple[FloatArray, FloatArray, IntArray, IntArray]:
    """load_digits() split once, shared by both digits versions.

    Both versions must be evaluated on the *same* held-out rows, otherwise
    their accuracies and disagreements would not be comparable.  Features stay
    as raw 0..16 pixel intensities in float32: that is exactly what a gateway
    client sends, and any scaling lives inside the exported graph.
    """
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return x_tr, x_te, y_tr, y_te


def fraud_population(n_users: int, seed: int) -> tuple[FloatArray, IntArray]:
    """Synthesise a plausible per-user table and a fraud label.

    The label is drawn from a logistic model of the (already rounded) fields
    plus Gaussian "unobserved" noise, so the task is learnable but not
    trivially separable, with roughly 7-10 % positives.  Draw order matters for
    reproducibility: all draws come from one Generator in a fixed sequence.
    """
    rng = np.random.default_rng(seed)

    # Adult customers, centred on early 40s.
    age = np.clip(np.rint(rng.normal(41.0, 14.0, n_users)), 18, 90)
    # Heavy-tailed tenure (median ~1.5 years); an account cannot be much
    # older than the customer's adult life.
    account_age_days = np.minimum(np.rint(rng.gamma(1.3, 600.0, n_users)), (age - 18) * 365 + 30)
    # Balances are log-normal: median ~2,000, long right tail.
    balance = np.round(rng.lognormal(7.6, 1.5, n_users), 2)
    # Over-dispersed weekly activity (gamma-Poisson mixture, mean ~8).
    txn_count_7d = rng.poisson(rng.gamma(2.0, 4.0, n_users)).astype(np.float64)
    # Average amount only makes sense with at least one transaction.
    amounts = np.round(rng.lognormal(3.8, 0.9, n_users), 2)
    avg_txn_amount = np.where(txn_count_7d > 0, amounts, 0.0)
    # Charge-backs are rare, and more common on brand-new accounts.
    chargebacks_90d = rng.poisson(0.05 + 0.25 * np.exp(-account_age_days / 180.0)).astype(
        np.float64
    )

    logit = (
        -1.5
        - 1.0 * np.log1p(account_age_days / 30.0)  # new accounts are riskier
        + 1.6 * chargebacks_90d  # past disputes predict future fraud
        + 0.9 * np.log1p(avg_txn_amount / 50.0)  # large tickets
        + 0.08 * (txn_count_7d - 8.0)  # bursts of activity
        - 0.25 * (np.log10(balance + 1.0) - 3.3)  # funded accounts are safer
        - 0.02 * (age - 41.0)  # slightly younger skew
        + rng.normal(0.0, 0.3, n_users)  # what the features do not capture
    )
    is_fraud = rng.random(n_users) < 1.0 / (1.0 + np.exp(-logit))

    x = np.column_stack(
        [age, account_age_days, balance, txn_count_7d, avg_txn_amount, chargebacks_90d]
    )
    # Train on float32, exactly what the ONNX input carries: tree thresholds
    # are then learned against the same values the graph will compare.
    return x.astype(np.float32), is_fraud.astype(np.int64)


def write_entities_csv(path: Path, x: FloatArray, n_rows: int) -> None:
    """Example users a client can send to the fraud model (label withheld).

    Values are formatted from the float32 training matrix so the CSV round-trips
    to exactly the float32 inputs the model was trained on.  '\\n' line endings
    keep the file byte-stable across platforms.
    """
    money = {"balance", "avg_txn_amount"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["user_id", *FRAUD_FEATURES])
        for i, row in enumerate(x[:n_rows], start=1):
            cells = [
                f"{float(v):.2f}" if name in money else str(int(v))
                for name, v in zip(FRAUD_FEATURES, row, strict=True)
            ]
            writer.writerow([f"u{i:04d}", *cells])


def fraud_defaults(x: FloatArray, y: IntArray) -> dict[str, float]:
    """The fraud model's [features] defaults: each field's median over the non-fraud
    users of the training rows, to two decimals.

    A user the feature store does not have is then scored as a typical legitimate
    user (``build_fraud`` checks that the model says "not fraud" for it). Zeros, or a
    few hand-picked values with zeros for the rest, would describe a brand-new account
    with no balance and no activity, which the model rightly scores as fraud.
    """
    medians = np.median(x[y == 0], axis=0)
    return {name: round(float(v), 2) for name, v in zip(FRAUD_FEATURES, medians, strict=True)}


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
def train_digits_logreg(x: FloatArray, y: IntArray) -> Pipeline:
    """v1: standardised multinomial logistic regression, C picked by CV.

    With the lbfgs solver scikit-learn fits a multinomial (softmax) model for
    multi-class targets; the ``multi_class`` argument is gone in recent
    releases, so it is not passed.  The scaler sits in the pipeline so that it
    is exported into the graph and callers send raw 0..16 pixels.
    """
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    search = GridSearchCV(
        pipe,
        {"clf__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]},
        cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=DIGITS_CV_SEED),
        n_jobs=1,
    )
    search.fit(x, y)
    best: Pipeline = search.best_estimator_
    print(f"digits v1: chose C={search.best_params_['clf__C']}")
    return best


def train_digits_mlp(x: FloatArray, y: IntArray) -> Pipeline:
    """v2: one hidden layer of 64 ReLUs.  Non-linear, so it genuinely differs."""
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "clf",
                MLPClassifier(
                    hidden_layer_sizes=(64,),
                    alpha=1e-3,
                    max_iter=1000,
                    random_state=DIGITS_MLP_SEED,
                ),
            ),
        ]
    )
    pipe.fit(x, y)
    return pipe


def train_fraud(x: FloatArray, y: IntArray) -> GradientBoostingClassifier:
    """Small boosted ensemble: 60 depth-3 trees keep the file tiny (~32 kB)."""
    model = GradientBoostingClassifier(
        n_estimators=60, max_depth=3, learning_rate=0.1, random_state=FRAUD_MODEL_SEED
    )
    model.fit(x, y)
    return model


# --------------------------------------------------------------------------
# Export and graph surgery
# --------------------------------------------------------------------------
def export(
    estimator: BaseEstimator,
    input_name: str,
    n_features: int,
    outputs: Sequence[OutputSpec],
    graph_name: str,
    doc: str,
    metadata: dict[str, str],
) -> ModelProto:
    """Convert with skl2onnx, then normalise the graph to the public signature."""
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    model = convert_sklearn(
        estimator,
        # A fixed graph name: skl2onnx otherwise uses a random uuid4 hex, which
        # alone would make every build produce different bytes.
        name=graph_name,
        initial_types=[(input_name, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
        # zipmap=False: a plain [batch, n_classes] tensor instead of a
        # sequence of maps, which the gateway's tensor protocols cannot carry.
        options={id(final): {"zipmap": False}},
    )
    return finalize(model, input_name, outputs, graph_name, doc, metadata)


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere it is referenced in a (flat) graph."""
    if old == new:
        return
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    taken |= {t.name for t in graph.initializer}
    if new in taken:
        raise ValueError(f"cannot rename {old!r} to {new!r}: name already in use")
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.name == old:
            vi.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers that no longer feed any graph output.

    Removing the ``label`` output from a digits graph leaves an
    ArgMax/ArrayFeatureExtractor/Reshape/Cast chain computing nothing anyone
    reads; dead nodes cost runtime and bytes, so walk back from the outputs
    and keep only what is reachable.
    """
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def set_shape(vi: onnx.ValueInfoProto, elem_type: int, trailing: Sequence[int]) -> None:
    """Declare [batch, *trailing] with a *named* symbolic leading dim.

    skl2onnx leaves dim 0 fully unknown (neither value nor param); naming it
    'batch' on the input and every output tells clients and the gateway that
    these dimensions are one and the same.
    """
    vi.type.tensor_type.elem_type = elem_type
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_param = BATCH_DIM
    for d in trailing:
        shape.dim.add().dim_value = d


def finalize(
    model: ModelProto,
    input_name: str,
    outputs: Sequence[OutputSpec],
    graph_name: str,
    doc: str,
    metadata: dict[str, str],
) -> ModelProto:
    """Turn skl2onnx's output into the exact public signature, then validate.

    The gateway derives its request/response schema from the graph's inputs
    and outputs, so names, order, dtypes and the symbolic batch dimension are
    part of the contract; everything else (names, doc strings, metadata) is
    pinned so the bytes are reproducible.
    """
    graph = model.graph
    if len(graph.input) != 1 or graph.input[0].name != input_name:
        raise RuntimeError(f"unexpected inputs: {[i.name for i in graph.input]}")
    n_features = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    set_shape(graph.input[0], TensorProto.FLOAT, [n_features])

    # Keep only the requested outputs, in the requested order, under their
    # public names.  Order matters: the gateway (and TF-Serving style clients)
    # treat the first output as the primary one.
    by_name = {o.name: o for o in graph.output}
    missing = [s.source for s in outputs if s.source not in by_name]
    if missing:
        raise RuntimeError(f"skl2onnx did not produce outputs {missing}")
    kept = [onnx.ValueInfoProto() for _ in outputs]
    for proto, spec in zip(kept, outputs, strict=True):
        proto.CopyFrom(by_name[spec.source])
    del graph.output[:]
    graph.output.extend(kept)
    for spec in outputs:
        rename_tensor(graph, spec.source, spec.name)
    for vi, spec in zip(graph.output, outputs, strict=True):
        set_shape(vi, spec.elem_type, spec.trailing_dims)

    prune(graph)
    # Intermediate value_info is advisory and re-derivable; dropping it keeps
    # the file minimal and stops stale shapes from surviving the surgery.
    del graph.value_info[:]

    # skl2onnx may list the same domain twice (e.g. '' at 17 from two
    # sub-converters); keep one entry per domain at its highest version, in a
    # stable order.
    versions: dict[str, int] = {}
    for op in model.opset_import:
        versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    used = {n.domain for n in graph.node} | {""}
    del model.opset_import[:]
    for domain in sorted(d for d in versions if d in used):
        model.opset_import.append(onnx.helper.make_opsetid(domain, versions[domain]))

    model.ir_version = IR_VERSION
    graph.name = graph_name
    graph.doc_string = ""
    model.doc_string = doc
    for node in graph.node:
        node.doc_string = ""
    del model.metadata_props[:]
    for key in sorted(metadata):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, metadata[key]

    # full_check runs strict shape inference too; then re-infer explicitly and
    # confirm that whatever ONNX can derive agrees with the declared outputs.
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    for declared, got in zip(model.graph.output, inferred.graph.output, strict=True):
        if declared.type != got.type:
            raise RuntimeError(f"shape inference disagrees on {declared.name}: {got.type}")
    return model


def save(model: ModelProto, path: Path) -> None:
    """Serialise with deterministic=True so map-ordering never changes bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------
def run_onnx(
    path: Path,
    x: FloatArray,
    expected: Sequence[tuple[str, str, list[Any]]],
) -> list[npt.NDArray[Any]]:
    """Load with onnxruntime, assert the signature, and run the test rows."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ins, outs = sess.get_inputs(), sess.get_outputs()
    sig = [(a.name, a.type, a.shape) for a in (*ins, *outs)]
    print(f"  inputs : {[(i.name, i.type, i.shape) for i in ins]}")
    print(f"  outputs: {[(o.name, o.type, o.shape) for o in outs]}")
    if sig != list(expected):
        raise RuntimeError(f"{path}: signature {sig} != expected {list(expected)}")
    return list(sess.run(None, {ins[0].name: x}))


def describe(path: Path) -> tuple[int, str]:
    data = path.read_bytes()
    if len(data) >= 1_000_000:
        raise RuntimeError(f"{path} is {len(data)} bytes; examples must stay well under 1 MB")
    return len(data), hashlib.sha256(data).hexdigest()


def check_proba(name: str, got: npt.NDArray[Any], want: npt.NDArray[Any]) -> float:
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    print(f"  max |onnxruntime - sklearn.predict_proba| = {diff:.3e}")
    if diff >= MAX_ABS_DIFF:
        raise RuntimeError(f"{name}: onnxruntime deviates from sklearn by {diff}")
    return diff


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------
DIGITS_OUTPUTS = [OutputSpec("probabilities", "probabilities", TensorProto.FLOAT, (10,))]
DIGITS_SIGNATURE = [
    ("pixels", "tensor(float)", [BATCH_DIM, 64]),
    ("probabilities", "tensor(float)", [BATCH_DIM, 10]),
]


def build_digits(out: Path) -> list[Report]:
    x_tr, x_te, y_tr, y_te = digits_split()
    candidates: list[tuple[int, str, Pipeline, str]] = [
        (
            1,
            "digits_v1_logreg",
            train_digits_logreg(x_tr, y_tr),
            "Digits 8x8 classifier v1: StandardScaler + multinomial LogisticRegression.",
        ),
        (
            2,
            "digits_v2_mlp",
            train_digits_mlp(x_tr, y_tr),
            "Digits 8x8 classifier v2: StandardScaler + MLPClassifier(64 hidden ReLU).",
        ),
    ]
    reports: list[Report] = []
    predictions: list[IntArray] = []
    for version, graph_name, est, doc in candidates:
        metadata = {
            "classes": ",".join(str(c) for c in est.classes_),
            "input_range": "raw load_digits pixel intensities 0..16",
        }
        model = export(est, "pixels", 64, DIGITS_OUTPUTS, graph_name, doc, metadata)
        path = out / "digits" / str(version) / "model.onnx"
        save(model, path)
        print(f"digits v{version} -> {path}")
        (proba,) = run_onnx(path, x_te, DIGITS_SIGNATURE)
        diff = check_proba(graph_name, proba, est.predict_proba(x_te))
        pred = est.classes_[np.argmax(proba, axis=1)]
        if not np.array_equal(pred, est.predict(x_te)):
            raise RuntimeError(f"{graph_name}: onnx argmax disagrees with sklearn.predict")
        acc = float(np.mean(pred == y_te))
        size, sha = describe(path)
        print(f"  test accuracy = {acc:.4f} ({len(y_te)} rows); {size} bytes; sha256 {sha}")
        predictions.append(pred)
        reports.append(Report(path, acc, diff, size, sha))

    # Two versions only make a useful demo (A/B, pinning, rollbacks) if they
    # actually behave differently.
    disagree = int(np.sum(predictions[0] != predictions[1]))
    print(f"digits v1 vs v2: predictions differ on {disagree} of {len(y_te)} test rows")
    if disagree == 0 or reports[0].accuracy == reports[1].accuracy:
        raise RuntimeError("digits v1 and v2 are not meaningfully different")
    return reports


FRAUD_SIGNATURE = [
    ("features", "tensor(float)", [BATCH_DIM, 6]),
    ("probabilities", "tensor(float)", [BATCH_DIM, 2]),
    ("label", "tensor(int64)", [BATCH_DIM]),
]


def build_fraud(out: Path) -> list[Report]:
    x, y = fraud_population(FRAUD_N_USERS, FRAUD_DATA_SEED)
    print(f"fraud: {len(y)} users, {y.mean():.2%} positive")
    write_entities_csv(out / "fraud" / "entities.csv", x, FRAUD_CSV_USERS)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=FRAUD_SPLIT_SEED
    )
    est = train_fraud(x_tr, y_tr)
    defaults = fraud_defaults(x_tr, y_tr)
    model = export(
        est,
        "features",
        len(FRAUD_FEATURES),
        [
            # skl2onnx emits (label, probabilities); the gateway's convention is
            # the score first, so reorder.
            OutputSpec("probabilities", "probabilities", TensorProto.FLOAT, (2,)),
            OutputSpec("label", "label", TensorProto.INT64, ()),
        ],
        "fraud_v1_gbdt",
        "Fraud score from six per-user features (GradientBoostingClassifier, 60x depth 3).",
        {"feature_names": ",".join(FRAUD_FEATURES), "classes": "0,1"},
    )
    path = out / "fraud" / "1" / "model.onnx"
    save(model, path)
    print(f"fraud v1 -> {path}")
    proba, label = run_onnx(path, x_te, FRAUD_SIGNATURE)
    diff = check_proba("fraud", proba, est.predict_proba(x_te))
    if not np.array_equal(label, est.predict(x_te)):
        raise RuntimeError("fraud: onnx label disagrees with sklearn.predict")
    acc = float(np.mean(label == y_te))
    auc = float(roc_auc_score(y_te, proba[:, 1]))
    unknown = np.array([[defaults[name] for name in FRAUD_FEATURES]], dtype=np.float32)
    unknown_proba, unknown_label = run_onnx(path, unknown, FRAUD_SIGNATURE)
    if int(unknown_label[0]) != 0:
        raise RuntimeError(f"fraud: the [features] defaults {defaults} are scored as fraud")
    print(f"  [features] defaults {defaults}: P(fraud) = {float(unknown_proba[0, 1]):.4f}")
    write_toml(out / "fraud" / "model.toml", fraud_toml(defaults))
    size, sha = describe(path)
    # Accuracy alone flatters an imbalanced task, so show the base rate and AUC.
    print(
        f"  test accuracy = {acc:.4f} (majority baseline {1 - y_te.mean():.4f}), "
        f"ROC AUC = {auc:.4f}; {size} bytes; sha256 {sha}"
    )
    return [Report(path, acc, diff, size, sha)]


DIGITS_TOML = """\
# Two versions of the same digits classifier: v1 logistic regression, v2 a small MLP.
[model]
versions = "all"

[runtime]
intra_op_threads = 1
inter_op_threads = 1

[batching]
max_batch_size = 32
max_queue_delay_ms = 2.0
"""

FRAUD_TOML = """\
# Fraud score from six per-user features. Callers send either the features
# themselves (input "features", FP32 [n, 6]) or just user ids (input "user_id",
# BYTES [n]): the gateway then looks the features up in Redis (--redis-url), in the
# in-process store of --features-file, or, with neither, in this model's own
# entities.csv ([features] file below).
[model]
versions = "latest"

[runtime]
intra_op_threads = 1
inter_op_threads = 1

[features]
entity_input = "user_id"
key = "user:{{user_id}}"
fields = ["age", "account_age_days", "balance", "txn_count_7d", "avg_txn_amount", "chargebacks_90d"]
input = "features"
# A user the store does not have gets these: the medians of the non-fraud users in the
# training data, which the model scores as not fraud. Answers that used them say so
# (header x-feature-defaults), and a warning line counts them (at most every 10 s).
defaults = {{ {defaults} }}
missing = "default"
local_ttl_ms = 1000
redis_timeout_ms = 20
on_redis_error = "default"
file = "entities.csv"
"""


def fraud_toml(defaults: dict[str, float]) -> str:
    """FRAUD_TOML with its [features] defaults (integers written without ".0")."""
    values = ", ".join(
        f"{name} = {int(value) if value.is_integer() else value}"
        for name, value in defaults.items()
    )
    return FRAUD_TOML.format(defaults=values)


def write_toml(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def write_profiles(out: Path) -> None:
    """Each version's profile.json (drift monitoring's reference, SPEC 12), from the
    inputs it was trained on, as ``gateway profile build`` makes it."""
    from tempfile import TemporaryDirectory

    from gateway.cli.profile import build_version_profile

    digits_x, _, _, _ = digits_split()
    fraud_x, fraud_y = fraud_population(FRAUD_N_USERS, FRAUD_DATA_SEED)
    fraud_train, _, _, _ = train_test_split(
        fraud_x, fraud_y, test_size=TEST_SIZE, stratify=fraud_y, random_state=FRAUD_SPLIT_SEED
    )
    with TemporaryDirectory() as scratch:
        samples = {"digits": Path(scratch) / "digits.npy", "fraud": Path(scratch) / "fraud.npy"}
        np.save(samples["digits"], digits_x.astype(np.float32))
        np.save(samples["fraud"], fraud_train.astype(np.float32))
        for model, versions in (("digits", (1, 2)), ("fraud", (1,))):
            for version in versions:
                # later versions reuse the first one's edges: the drift report compares
                # the versions' outputs bin by bin
                like = versions[0] if version != versions[0] else None
                _, summary = build_version_profile(samples[model], out, model, version, 10, like)
                print(summary)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="model repository root to write into (default: this script's folder)",
    )
    parser.add_argument(
        "--profiles-only",
        action="store_true",
        help="only (re)write each version's profile.json, from the same training data",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.profiles_only:
        write_profiles(out)
        return 0
    write_toml(out / "digits" / "model.toml", DIGITS_TOML)  # fraud's: build_fraud

    # One BLAS/OpenMP thread: multi-threaded reductions may sum in a different
    # order from run to run or machine to machine, which would perturb trained
    # weights in the last bits and hence the bytes of the exported models.
    with threadpool_limits(limits=1):
        reports = build_digits(out) + build_fraud(out)
    write_profiles(out)

    print("\nsummary:")
    for r in reports:
        print(
            f"  {r.path.relative_to(out)}: accuracy {r.accuracy:.4f}, "
            f"max abs diff {r.max_abs_diff:.3e}, {r.size} bytes, sha256 {r.sha256}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
