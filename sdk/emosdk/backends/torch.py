"""A reference backend that runs a graph's PyTorch module instead of its ONNX file.

For evaluation and parity checks (``python -m train.evaluate``): the recognizer's windowing,
front-ends, masks and metrics stay exactly the runtime's, only the graph differs. torch is
imported only when this backend is created; the runtime never imports this module on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend


class TorchBackend(Backend):
    """Runs ``module`` (option ``module=``) with the graph's declared inputs, in order.

    The module takes the inputs positionally in the spec's order and returns a tensor or a
    tuple of tensors in the spec's output order.
    """

    name = "torch"

    def _load(self) -> None:
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailableError(
                'the torch reference backend needs torch: pip install "emosdk[export]"'
            ) from e
        module = self.options.get("module")
        if not isinstance(module, torch.nn.Module):
            raise BackendUnavailableError("TorchBackend needs module=<torch.nn.Module>")
        self._torch = torch
        self._module = module.eval()
        self.device = "torch-cpu"

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(feeds[t.name]) for t in self.spec.inputs]
        with torch.inference_mode():
            out = self._module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        names = [t.name for t in self.spec.outputs]
        return {n: o.detach().numpy() for n, o in zip(names, outs, strict=False)}
