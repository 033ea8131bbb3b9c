"""emosdk._malloc: glibc's thresholds set once per process when a Recognizer is built, unless the
process opted out or chose them itself. Each case runs in a fresh interpreter (the setting is
process-wide and done once)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import numpy as np; import emosdk._malloc as m; from emosdk import Recognizer\n"
    "with Recognizer() as rec: rec.predict(audio=np.zeros(16000, np.float32), sample_rate=16000)\n"
    "print(m._done)\n"
)


def run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "EMOSDK_MALLOC"))}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION")),
    reason="glibc only: elsewhere nothing is tuned",
)
def test_a_recognizer_sets_the_thresholds_once_unless_told_not_to() -> None:
    assert run({}) == "True"
    assert run({"EMOSDK_MALLOC_TUNING": "0"}) == "False"
    assert run({"MALLOC_TRIM_THRESHOLD_": "262144"}) == "False"
