"""Real recordings shipped with emosdk, so every command has real input out of the box.

Twelve CREMA-D clips (Cao et al., 2014; Open Database License 1.0 / Database Contents License
1.0, see ``LICENSE.txt`` beside this file), copied byte for byte from the corpus (SHA-256 in
``manifest.csv``):

- ``1001_DFA_{ANG,DIS,FEA,HAP,NEU,SAD}_XX.flv``: actor 1001 saying "Don't forget a jacket" with
  each of the six emotions, audio-visual (Flash video VP6 480x360 at 29.97 fps, MP3 audio),
  1.9 to 2.3 s each;
- ``1002_DFA_*_XX.mp3``: actor 1002, the same sentence, audio only.

The file names carry CREMA-D's *intended* emotion. About 2 MB in all.

>>> from emosdk import samples
>>> samples.path("1001_DFA_HAP_XX.flv")                            # doctest: +SKIP
PosixPath('.../emosdk/samples/1001_DFA_HAP_XX.flv')
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

SAMPLES_DIR = Path(__file__).resolve().parent
MEDIA = (".flv", ".mp3")


def names() -> list[str]:
    """File names of the shipped recordings (audio-visual clips first)."""
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix in MEDIA)


def paths() -> list[Path]:
    """Paths of the shipped recordings."""
    return [SAMPLES_DIR / n for n in names()]


def path(name: str) -> Path:
    """The path of one shipped recording, by file name (or its stem, e.g. ``1001_DFA_HAP_XX``).

    Raises:
        InputError: no shipped recording has that name.
    """
    for n in names():
        if name in (n, Path(n).stem):
            return SAMPLES_DIR / n
    raise InputError(f"sample: expected one of {names()}, got {name!r}")


def manifest() -> Path:
    """The manifest CSV of the shipped recordings (``file,label`` columns for emosdk-bench)."""
    return SAMPLES_DIR / "manifest.csv"
