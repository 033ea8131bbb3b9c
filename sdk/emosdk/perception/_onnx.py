"""One place that opens the perception graphs with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailableError, ModelError


def open_session(path: str | Path, role: str, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU for one perception graph.

    Args:
        path: the ONNX file.
        role: what the graph is (for messages), e.g. ``"face detector"``.
        threads: intra-op threads (1: these graphs are small, and a stream runs beside the
            audio and face encoders).

    Raises:
        ModelError: the file is missing or is not a loadable ONNX graph (the file is named).
        BackendUnavailableError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a runtime dependency
        raise BackendUnavailableError(
            "the perception graphs need onnxruntime: pip install onnxruntime"
        ) from e
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{role}: model file {p} does not exist")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # idle spinning threads would steal the core the next graph of the frame needs
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors on a bad file
        raise ModelError(f"{role}: cannot load {p} as an ONNX graph: {e}") from e


def check_io(session, role: str, path, inputs: dict, outputs: tuple[str, ...]) -> None:
    """Raise ModelError unless the graph has the named inputs (with these shapes) and outputs."""
    have_in = {i.name: list(i.shape) for i in session.get_inputs()}
    have_out = [o.name for o in session.get_outputs()]
    for name, shape in inputs.items():
        got = have_in.get(name)
        if got is None or [d if isinstance(d, int) else None for d in got][1:] != shape[1:]:
            raise ModelError(
                f"{role}: {path} must take input {name!r} of shape {shape} (got inputs {have_in})"
            )
    missing = [o for o in outputs if o not in have_out]
    if missing:
        raise ModelError(f"{role}: {path} lacks outputs {missing} (has {have_out})")
