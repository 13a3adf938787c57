"""`fastmlp export MODEL OUT.onnx`, and `fastmlp.export_onnx(model, path)`: a model as a standard ONNX graph.

The graph, opset 17, one input and two outputs, every node a standard ONNX operator:

    X  float32 (N, inputs)
    -> Sub(mean) -> Div(std)                      only when the model standardises its inputs
    -> Gemm(W0, b0) -> Relu -> ... -> Gemm(W{L-1}, b{L-1})
    -> Softmax(axis=1)                            -> output "probabilities", float32 (N, classes)
    -> ArgMax(axis=1) [-> Gather(classes)]        -> output "label", (N,): the model's class labels
                                                     (int64, double or string), else the class index

The class labels are also in the model's metadata ("classes", a JSON list), with "feature_names" and
"target" when the model knows them. ONNX Runtime runs it as is: `session.run(None, {"X": X})`.
The onnx package is an optional extra (`pip install "fastmlp[onnx]"`); fastmlp needs it only here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..model import MLP
from ..runtime.atomic import atomic_write
from .common import check_output_path, new_parser, run_reporting_errors

PROG = "fastmlp export"
OPSET = 17
IR_VERSION = 8  # the IR of opset 17: readable by every ONNX Runtime since 1.13
INSTALL_HINT = 'pip install "fastmlp[onnx]"'


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(f"exporting to ONNX needs the onnx package, which is not installed: {INSTALL_HINT}") from None
    return onnx


def build_onnx(model: MLP) -> Any:
    """The model as an `onnx.ModelProto` (checked by onnx's checker)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    initializers, nodes = [], []
    current = "X"
    if model.mean is not None and model.std is not None:
        initializers += [numpy_helper.from_array(model.mean, "mean"), numpy_helper.from_array(model.std, "std")]
        nodes += [helper.make_node("Sub", ["X", "mean"], ["centered"]),
                  helper.make_node("Div", ["centered", "std"], ["standardized"])]
        current = "standardized"
    n_layers = len(model.weights)
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        initializers += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [f"z{i}"]))  # X @ W + b
        current = f"z{i}"
        if i < n_layers - 1:
            nodes.append(helper.make_node("Relu", [current], [f"h{i}"]))
            current = f"h{i}"
    nodes.append(helper.make_node("Softmax", [current], ["probabilities"], axis=1))
    if model.classes is None:
        nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0))
        label_type = TensorProto.INT64
    else:
        nodes.append(helper.make_node("ArgMax", ["probabilities"], ["class_index"], axis=1, keepdims=0))
        classes = np.asarray(model.classes)
        if classes.dtype.kind == "U":
            table = helper.make_tensor("classes", TensorProto.STRING, classes.shape,
                                       [c.encode("utf-8") for c in classes.tolist()])
            label_type = TensorProto.STRING
        else:
            classes = classes.astype(np.int64 if classes.dtype.kind in "iu" else np.float64)
            table = numpy_helper.from_array(classes, "classes")
            label_type = TensorProto.INT64 if classes.dtype == np.int64 else TensorProto.DOUBLE
        initializers.append(table)
        nodes.append(helper.make_node("Gather", ["classes", "class_index"], ["label"], axis=0))
    graph = helper.make_graph(
        nodes, "fastmlp_mlp",
        inputs=[helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", model.n_features])],
        outputs=[helper.make_tensor_value_info("label", label_type, ["N"]),
                 helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", model.n_classes])],
        initializer=initializers,
    )
    proto = helper.make_model(graph, producer_name="fastmlp", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    metadata = {"layer_sizes": json.dumps(list(model.layer_sizes)),
                "classes": json.dumps(list(range(model.n_classes)) if model.classes is None
                                      else np.asarray(model.classes).tolist()),
                "standardized": json.dumps(model.mean is not None)}
    if model.feature_names is not None:
        metadata["feature_names"] = json.dumps(list(model.feature_names))
    if model.target is not None:
        metadata["target"] = model.target
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: MLP | str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Write model (an MLP, or the path of a saved one) to path as an ONNX graph, atomically (see the module
    docstring for the graph). Raises ImportError, saying how to install it, without the onnx package."""
    if not isinstance(model, MLP):
        model = MLP.load(model)
    proto = build_onnx(model)
    with atomic_write(Path(path)) as f:
        f.write(proto.SerializeToString())


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = new_parser(prog, description="Write a saved fastmlp model as an ONNX graph (Gemm, Relu, Softmax; "
                                          "the standardisation and class labels too), for ONNX Runtime and "
                                          f"other ONNX tools. Needs the onnx extra: {INSTALL_HINT}.")
    parser.add_argument("model", metavar="MODEL", help="a model written by fastmlp train --save (.npz)")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def run(args: argparse.Namespace) -> None:
    model = MLP.load(args.model)
    check_output_path(args.output, "OUT.onnx")
    export_onnx(model, args.output)
    labels = "class indices" if model.classes is None else f"labels {', '.join(map(str, model.classes[:10]))}" + (
        " ..." if model.n_classes > 10 else "")
    print(f"wrote {args.output}: {'-'.join(map(str, model.layer_sizes))} net"
          f"{', standardised inputs' if model.mean is not None else ''}, {labels}; "
          f"input X float32 (N, {model.n_features}), outputs label and probabilities")


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    return run_reporting_errors(prog, lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
