"""ONNX export of the op: a TensorRT plugin node, or standard ops that onnxruntime runs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

import onnxruntime as ort  # noqa: E402
from attention_cases import naive_attention, random_inputs  # noqa: E402

from emosdk.export.attention import (  # noqa: E402
    PLUGIN_DOMAIN,
    PLUGIN_NAME,
    MaskedAttention,
    export_attention_onnx,
    translation_table,
)


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tensorrt_target_emits_one_plugin_node(tmp_path, dtype):
    q, k, v = torch.randn(2, 4, 6, 16), torch.randn(2, 4, 25, 16), torch.randn(2, 4, 25, 16)
    args = (q.to(dtype), k.to(dtype), v.to(dtype), torch.ones(2, 25))
    path = export_attention_onnx(
        MaskedAttention(), args, tmp_path / "a.onnx", ["q", "k", "v", "mask"], target="tensorrt"
    )
    model = onnx.load(path)
    (node,) = [n for n in model.graph.node if n.op_type == PLUGIN_NAME]
    assert node.domain == PLUGIN_DOMAIN and list(node.input) == ["q", "k", "v", "mask"]
    assert _attrs(node) == {"scale": 0.25, "plugin_version": b"1", "plugin_namespace": b""}
    assert {(o.domain, o.version) for o in model.opset_import} >= {(PLUGIN_DOMAIN, 1)}
    expected = onnx.helper.np_dtype_to_tensor_dtype(
        np.dtype("float16" if dtype == torch.float16 else "float32")
    )
    assert model.graph.output[0].type.tensor_type.elem_type == expected


def test_tensorrt_target_without_mask_has_three_inputs(tmp_path):
    q, k, v = (torch.randn(1, 4, 16, 16) for _ in range(3))
    path = export_attention_onnx(
        MaskedAttention(scale=0.5),
        (q, k, v),
        tmp_path / "b.onnx",
        ["q", "k", "v"],
        target="tensorrt",
    )
    (node,) = [n for n in onnx.load(path).graph.node if n.op_type == PLUGIN_NAME]
    assert list(node.input) == ["q", "k", "v"] and _attrs(node)["scale"] == 0.5


def test_onnx_target_runs_in_onnxruntime_like_the_reference(tmp_path):
    rng = np.random.default_rng(2)
    q, k, v, mask = random_inputs(rng, 3, 4, 15, 75, 16)
    mask[1] = 0.0  # an all-masked row: zeros, not NaN
    args = tuple(torch.from_numpy(x).float() for x in (q, k, v, mask))
    batch, keys = torch.export.Dim("batch", max=64), torch.export.Dim("keys", max=512)
    path = export_attention_onnx(
        MaskedAttention(),
        args,
        tmp_path / "c.onnx",
        ["q", "k", "v", "mask"],
        target="onnx",
        dynamic_shapes=({0: batch}, {0: batch, 2: keys}, {0: batch, 2: keys}, {0: batch, 1: keys}),
    )
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert PLUGIN_NAME not in ops and "MatMul" in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: a.numpy() for n, a in zip(["q", "k", "v", "mask"], args)}
    (out,) = sess.run(None, feed)
    assert np.isfinite(out).all() and (out[1] == 0).all()
    np.testing.assert_allclose(out, naive_attention(q, k, v, mask), atol=2e-6, rtol=1e-5)
    # another batch and key count through the same graph
    q2, k2, v2, m2 = random_inputs(rng, 5, 4, 15, 31, 16)
    (out2,) = sess.run(
        None,
        {
            "q": q2.astype(np.float32),
            "k": k2.astype(np.float32),
            "v": v2.astype(np.float32),
            "mask": m2,
        },
    )
    np.testing.assert_allclose(out2, naive_attention(q2, k2, v2, m2), atol=2e-6, rtol=1e-5)


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="target"):
        translation_table("coreml")
