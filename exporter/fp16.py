"""FP32 ONNX -> mixed-precision FP16 ONNX with float32 inputs and outputs.

Every node computes in float16 except the numerically fragile ones (reductions, normalisations,
softmax, powers, roots, exponentials: their sums and squares overflow or lose every digit in
float16) and any the caller names; Cast nodes join the two regions. The graph's inputs and outputs
stay float32, so callers feed and read the same arrays as for FP32. This is the graph TensorRT
builds strongly typed, and ONNX Runtime runs it on a CPU as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .artifacts import sidecar_of
from .onnx_export import check_onnx, infer_shapes, save_onnx

KEEP_FP32_OPS = ("LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "LogSoftmax",
                 "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt",
                 "Exp", "Log")
# Inputs that ONNX types as float32 whatever the data type (Resize's scales).
FLOAT32_ONLY_INPUTS = {("Resize", 2), ("Upsample", 1)}
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Fp16Result:
    path: Path
    fp32_nodes: tuple[str, ...]  # nodes left computing in float32
    casts: int
    clamped_values: int  # initializer values beyond float16's range, clamped to +-65504


def fp16_from_onnx(src: Path, dst: Path, keep_fp32_ops: tuple[str, ...] = KEEP_FP32_OPS,
                   keep_fp32_nodes: tuple[str, ...] = ()) -> Fp16Result:
    external = sidecar_of(src).exists()  # the output keeps its input's layout: ViT-H's FP32 needs a sidecar
    model = infer_shapes(onnx.load(str(src)))
    graph = model.graph
    dtypes = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output, *graph.value_info)}
    dtypes.update({init.name: init.data_type for init in graph.initializer})
    is_float = {name for name, t in dtypes.items() if t == TensorProto.FLOAT}
    high = {n.name for n in graph.node if n.op_type in keep_fp32_ops or n.name in keep_fp32_nodes}

    def wanted(node: onnx.NodeProto, index: int) -> int:
        if node.name in high or (node.op_type, index) in FLOAT32_ONLY_INPUTS:
            return TensorProto.FLOAT
        return TensorProto.FLOAT16

    now, clamped = _lower_initializers(graph, is_float, wanted)
    nodes, casts = _cast_node_inputs(graph, is_float, high, now, wanted)
    _cast_outputs_back(graph, nodes, casts, now)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale float32 annotations; re-inferred below
    model = infer_shapes(model)
    save_onnx(model, dst, external)
    check_onnx(dst)
    return Fp16Result(dst, tuple(sorted(high)), len(casts), clamped)


def _lower_initializers(graph, is_float: set[str], wanted) -> tuple[dict[str, int], int]:
    """Store in float16 the float initializers only float16 consumers read (clamped to its range);
    returns the dtype of every float tensor so far and the number of clamped values."""
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, set[int]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in initializers and name in is_float:
                consumers.setdefault(name, set()).add(wanted(node, i))
    clamped = 0
    now = {inp.name: TensorProto.FLOAT for inp in graph.input}  # current dtype of every float tensor
    for name, init in initializers.items():
        if name in is_float and consumers.get(name) == {TensorProto.FLOAT16}:
            values = numpy_helper.to_array(init)
            clamped += int((np.abs(values) > FP16_MAX).sum())
            init.CopyFrom(numpy_helper.from_array(np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16), name))
            now[name] = TensorProto.FLOAT16
        elif name in is_float:
            now[name] = TensorProto.FLOAT
    return now, clamped


def _cast_node_inputs(graph, is_float: set[str], high: set[str], now: dict[str, int], wanted
                      ) -> tuple[list, dict]:
    """The graph's nodes in order, with one shared Cast in front of every input whose dtype differs
    from what its consumer computes in; ``now`` follows each output's dtype."""
    nodes, casts = [], {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in is_float or now.get(name, TensorProto.FLOAT) == wanted(node, i):
                continue
            key = (name, wanted(node, i))
            if key not in casts:
                suffix = "fp16" if key[1] == TensorProto.FLOAT16 else "fp32"
                cast = helper.make_node("Cast", [name], [f"{name}__{suffix}"], name=f"{name}__cast_{suffix}", to=key[1])
                nodes.append(cast)
                casts[key] = cast.output[0]
            node.input[i] = casts[key]
        low = node.name not in high
        if low:
            _lower_attributes(node)
        for out in node.output:
            if out in is_float:
                now[out] = TensorProto.FLOAT16 if low else TensorProto.FLOAT
        nodes.append(node)
    return nodes, casts


def _cast_outputs_back(graph, nodes: list, casts: dict, now: dict[str, int]) -> None:
    """Float32 outputs: a Cast back where the producer computes in float16."""
    for output in graph.output:
        if now.get(output.name) == TensorProto.FLOAT16:
            inner = f"{output.name}__fp16"
            for node in nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if i == output.name else i for i in node.input]
            nodes.append(helper.make_node("Cast", [inner], [output.name], name=f"{output.name}__cast_fp32",
                                          to=TensorProto.FLOAT))
            casts[(output.name, TensorProto.FLOAT)] = output.name


def _lower_attributes(node: onnx.NodeProto) -> None:
    """Make a float16 node's own constants float16 too (Constant, ConstantOfShape, Cast to float)."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT and \
                node.op_type in ("Constant", "ConstantOfShape"):
            values = np.clip(numpy_helper.to_array(attr.t), -FP16_MAX, FP16_MAX).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(values, attr.t.name))


def fp16_islands(src: Path, dst: Path, nodes: tuple[str, ...]) -> Fp16Result:
    """``src`` with only ``nodes`` computing in float16 (their weights stored in float16, Casts at the
    island's borders; norms and the other ops of ``KEEP_FP32_OPS`` among them stay float32).

    The TensorRT flavour's fallback for layers kept out of INT8: a strongly typed TensorRT build runs
    each layer in the precision its ONNX says, so a layer left in float32 there would run in FP32."""
    wanted = set(nodes)
    others = tuple(n.name for n in onnx.load(str(src), load_external_data=False).graph.node if n.name not in wanted)
    return fp16_from_onnx(src, dst, keep_fp32_ops=KEEP_FP32_OPS, keep_fp32_nodes=others)
