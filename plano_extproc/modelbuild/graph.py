"""The one ONNX graph builder the model builds share: the exporters (export_encoder,
export_e5), the tiny Arch-Router of the tests (tests/tiny_arch_router.py) and the tests'
small encoders. Build-time only: it needs ``onnx`` (the ``models`` extra).

Two naming styles, both giving every node one output:

- ``const`` / ``op``: readable, unique names chosen by the caller (``encoder.layer0.q``),
  weights as initializers: what the exporters write;
- ``initializer`` / ``constant`` / ``node``: exact initializer names (a checkpoint's own),
  small constants as deduplicated ``Constant`` nodes (they stay inline when initializers go
  to external data, and onnxruntime's shape inference can read them), and nodes named
  ``scope/OpType_n`` as torch's exporter names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class GraphBuilder:
    """Accumulates nodes and initializers."""

    def __init__(self) -> None:
        import onnx

        self.onnx = onnx
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._count = 0
        self._constants: dict[tuple[str, bytes], str] = {}

    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    # Readable unique names (the exporters).

    def const(self, name: str, value: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> str:
        """An initializer holding ``value``, named ``name`` (made unique)."""
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        unique = self._unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, unique))
        return unique

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        """A node whose one output is named ``name`` (made unique)."""
        out = self._unique(name)
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [out], name=out + "_node", **attrs)
        )
        return out

    def linear(self, x: str, weight: FloatArray, bias: FloatArray, name: str) -> str:
        # torch Linear stores [out, in]; MatMul wants [in, out].
        w = self.const(f"{name}.weight_t", weight.T)
        b = self.const(f"{name}.bias", bias)
        return self.op("Add", [self.op("MatMul", [x, w], f"{name}.matmul"), b], f"{name}.out")

    def layer_norm(
        self, x: str, weight: FloatArray, bias: FloatArray, eps: float, name: str
    ) -> str:
        scale = self.const(f"{name}.weight", weight)
        shift = self.const(f"{name}.bias", bias)
        return self.op("LayerNormalization", [x, scale, shift], name, axis=-1, epsilon=eps)

    # Exact and scoped names (checkpoint-shaped graphs).

    def initializer(self, name: str, array: npt.NDArray[Any]) -> str:
        """An initializer named exactly ``name``."""
        self._names.add(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def constant(self, values: npt.NDArray[Any]) -> str:
        """A ``Constant`` node holding ``values``; equal values share one node."""
        key = (values.dtype.str + str(values.shape), values.tobytes())
        if key not in self._constants:
            name = f"/Constant_{len(self._constants)}"
            tensor = self.onnx.numpy_helper.from_array(values, f"{name}_value")
            self.nodes.append(
                self.onnx.helper.make_node("Constant", [], [name], name=name, value=tensor)
            )
            self._constants[key] = name
        return self._constants[key]

    def ints(self, *values: int) -> str:
        return self.constant(np.array(values, dtype=np.int64))

    def scalar_i64(self, value: int) -> str:
        return self.constant(np.array(value, dtype=np.int64))

    def node(
        self, op_type: str, *inputs: str, scope: str, out: str | None = None, **attrs: Any
    ) -> str:
        """A node named ``scope/OpType_n``; its output is ``out`` or derived from the name."""
        self._count += 1
        name = f"{scope}/{op_type}_{self._count}"
        output = out or f"{name}_output_0"
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [output], name=name, **attrs)
        )
        return output
