"""The Backend base: the public ``infer`` validates inputs against the graph spec and times the
call; a backend implements only ``_load``, ``_infer`` and ``_close``."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import BackendError, EmosdkError, InputError
from ..models.bundle import GraphSpec, TensorSpec

logger = logging.getLogger("emosdk")


def check_feeds(spec: GraphSpec, feeds: Mapping[str, np.ndarray]) -> None:
    """Raise InputError unless ``feeds`` match the graph's declared inputs exactly.

    Checks names, dtype, rank, fixed dimensions, consistent sizes of named dynamic dimensions,
    C-contiguity and finiteness.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(f"{spec.role}: expected a mapping of input name -> array")
    expected = {t.name for t in spec.inputs}
    if set(feeds) != expected:
        raise InputError(
            f"{spec.role}: expected inputs {sorted(expected)}, got {sorted(map(str, feeds))}"
        )
    dims: dict[str, tuple[int, str]] = {}
    for t in spec.inputs:
        x = feeds[t.name]
        form = _form(t)
        if not isinstance(x, np.ndarray):
            raise InputError(f"{spec.role}.{t.name}: expected numpy array {form}, got {type(x)}")
        if x.dtype != np.dtype(t.dtype):
            raise InputError(f"{spec.role}.{t.name}: expected {form}, got dtype {x.dtype}")
        if x.ndim != len(t.shape):
            raise InputError(f"{spec.role}.{t.name}: expected {form}, got shape {x.shape}")
        for axis, (want, got) in enumerate(zip(t.shape, x.shape, strict=False)):
            if got == 0:
                raise InputError(f"{spec.role}.{t.name}: expected {form}, got empty axis {axis}")
            if isinstance(want, int) and want != got:
                raise InputError(f"{spec.role}.{t.name}: expected {form}, got shape {x.shape}")
            if isinstance(want, str):
                seen = dims.setdefault(want, (got, t.name))
                if seen[0] != got:
                    raise InputError(
                        f"{spec.role}.{t.name}: dimension {want!r} is {got} but {seen[1]} has "
                        f"{seen[0]}; expected {form}"
                    )
        if not x.flags.c_contiguous:
            raise InputError(f"{spec.role}.{t.name}: expected a C-contiguous array {form}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise InputError(f"{spec.role}.{t.name}: expected finite values {form}")


def _form(t: TensorSpec) -> str:
    return f"{t.dtype}[{', '.join(str(d) for d in t.shape)}]"


class Backend(abc.ABC):
    """Runs one graph of a model bundle.

    Subclasses implement :meth:`_load`, :meth:`_infer` and :meth:`_close` only.

    Attributes:
        name: Backend name (``"onnxruntime"``, ``"tensorrt"``).
        spec: The graph's declared interface.
        last_ms: Wall time of the most recent :meth:`infer` call in milliseconds.
        device: Where the graph runs (e.g. ``"CPUExecutionProvider"``), set by ``_load``.
    """

    name = "base"

    def __init__(self, path: str | Path, spec: GraphSpec, **options: object) -> None:
        self.path = Path(path)
        self.spec = spec
        self.options = options
        self.last_ms = 0.0
        self.calls = 0
        self.device = "unknown"
        self._closed = False
        self._load()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the graph spec, run the graph and time it.

        Args:
            feeds: input name -> array, exactly the graph's declared inputs.

        Returns:
            output name -> array, in the graph's declared output order.

        Raises:
            InputError: a feed has the wrong name, dtype, rank or shape, or is not finite.
            BackendError: the runtime failed while executing the graph.
        """
        if self._closed:
            raise BackendError(f"{self.spec.role}: backend is closed")
        check_feeds(self.spec, feeds)
        t0 = time.perf_counter()
        try:
            out = self._infer(feeds)
        except EmosdkError:
            raise
        except Exception as e:
            raise BackendError(f"{self.spec.role}: {self.name} failed: {e}") from e
        self.last_ms = (time.perf_counter() - t0) * 1e3
        self.calls += 1
        return out

    def close(self) -> None:
        """Release the graph's resources; further ``infer`` calls raise BackendError."""
        if not self._closed:
            self._closed = True
            self._close()

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass


def check_backend(name: str, backend: object, spec: GraphSpec) -> None:
    """Raise ConfigError unless ``backend`` is a Backend whose declared interface is ``spec``'s
    (a backend injected in place of a bundle graph must take and give the same tensors)."""
    from ..errors import ConfigError

    if not isinstance(backend, Backend):
        raise ConfigError(f"{name}: expected an emosdk Backend, got {backend!r}")
    if backend.spec.inputs != spec.inputs or backend.spec.outputs != spec.outputs:
        raise ConfigError(
            f"{name}: its spec (inputs {backend.spec.inputs}, outputs {backend.spec.outputs}) "
            f"does not match the bundle's (inputs {spec.inputs}, outputs {spec.outputs})"
        )
