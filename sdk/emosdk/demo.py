"""``emosdk-demo``: the recognizer live on the device, in a window or as JSON lines.

The window shows the video with the face box, a bar per class (smoothed, with the raw score as
a tick), which modalities contribute and why not, and the latency. It is drawn with OpenCV's
drawing functions (present in the headless wheel) and shown with ``cv2.imshow`` where OpenCV has
a GUI, else in a Tk window (the headless OpenCV wheel that the ``capture`` extra installs has no
GUI).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import __version__
from ._cli import run_command
from .capture.base import Event, Source, VideoFrame, source_info
from .config import RecognizerConfig
from .recognizer import Recognizer
from .results import EmotionResult, Modality

logger = logging.getLogger("emosdk")

PANEL_W = 320
DISPLAY_FPS = 15.0
VIEW_H = 480
COLORS = {  # BGR
    "anger": (60, 60, 230),
    "disgust": (60, 160, 60),
    "fear": (160, 60, 160),
    "happiness": (40, 200, 240),
    "neutral": (170, 170, 170),
    "sadness": (200, 120, 40),
}


class TeeSource:
    """Passes a source's events through and keeps the newest video frame for display."""

    def __init__(self, source: Source, on_frame=None) -> None:
        self.source = source
        self.info = source_info(source)  # what the source delivers, and its lateness
        self.frame: np.ndarray | None = None
        self.frame_t = -1.0
        self._on_frame = on_frame

    def events(self) -> Iterator[Event]:
        for ev in self.source.events():
            if isinstance(ev, VideoFrame):
                self.frame, self.frame_t = ev.image, ev.t_ms
                if self._on_frame is not None:
                    self._on_frame(ev.image)
            yield ev

    def close(self) -> None:
        self.source.close()


def render(
    frame: np.ndarray | None,
    result: EmotionResult | None,
    labels: tuple[str, ...],
    box=None,
    fps: float | None = None,
) -> np.ndarray:
    """Draw one demo screen (BGR uint8, height 480, width 640 + the panel)."""
    import cv2

    view = np.zeros((VIEW_H, 640, 3), np.uint8)
    if frame is not None:
        img = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        scale = min(640 / img.shape[1], VIEW_H / img.shape[0])
        w, h = int(img.shape[1] * scale), int(img.shape[0] * scale)
        x0, y0 = (640 - w) // 2, (VIEW_H - h) // 2
        view[y0 : y0 + h, x0 : x0 + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        if box is not None:
            p0 = (x0 + int(box.x * scale), y0 + int(box.y * scale))
            p1 = (x0 + int((box.x + box.w) * scale), y0 + int((box.y + box.h) * scale))
            color = (
                COLORS.get(result.label, (255, 255, 255))
                if result and result.label
                else (255, 255, 255)
            )
            cv2.rectangle(view, p0, p1, color, 2)
            for eye in (box.left_eye, box.right_eye):
                if eye is not None:
                    centre = (x0 + int(eye[0] * scale), y0 + int(eye[1] * scale))
                    cv2.circle(view, centre, 3, (0, 255, 255), -1)
    else:
        cv2.putText(view, "no camera", (240, 240), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (128,) * 3, 2)
    panel = np.full((VIEW_H, PANEL_W, 3), 30, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    title = result.label if result is not None and result.label else "-"
    cv2.putText(panel, title, (16, 44), font, 1.1, COLORS.get(title, (230, 230, 230)), 2)
    if result is not None and result.label:
        cv2.putText(panel, f"{result.confidence:.0%}", (230, 44), font, 0.8, (230,) * 3, 2)
    for i, lab in enumerate(labels):
        y = 80 + i * 40
        p = float(result.scores.get(lab, 0.0)) if result is not None else 0.0
        raw = float(result.raw_scores.get(lab, 0.0)) if result is not None else 0.0
        cv2.putText(panel, lab, (16, y + 16), font, 0.5, (220,) * 3, 1)
        cv2.rectangle(panel, (110, y + 2), (300, y + 22), (60, 60, 60), -1)
        cv2.rectangle(
            panel,
            (110, y + 2),
            (110 + int(190 * p), y + 22),
            COLORS[lab] if lab in COLORS else (200, 200, 200),
            -1,
        )
        xr = 110 + int(190 * raw)
        cv2.line(panel, (xr, y), (xr, y + 24), (255, 255, 255), 1)
    y = 80 + len(labels) * 40 + 10
    for m in (Modality.AUDIO, Modality.VIDEO):
        on = result is not None and m in result.modalities
        cv2.circle(panel, (26, y + 8), 8, (60, 200, 60) if on else (60, 60, 200), -1)
        cv2.putText(panel, m.value, (44, y + 14), font, 0.55, (230,) * 3, 1)
        why = (result.missing.get(m) if result is not None else "waiting") or ""
        cv2.putText(panel, why[:34], (110, y + 14), font, 0.38, (170,) * 3, 1)
        y += 28
    if result is not None:
        cv2.putText(
            panel,
            f"latency {result.latency.total_ms:6.1f} ms",
            (16, y + 20),
            font,
            0.5,
            (220,) * 3,
            1,
        )
        cv2.putText(
            panel,
            f"t = {result.timestamp_ms / 1000:7.2f} s",
            (16, y + 44),
            font,
            0.5,
            (220,) * 3,
            1,
        )
    if fps is not None:
        cv2.putText(panel, f"display {fps:4.1f} fps", (16, y + 68), font, 0.5, (220,) * 3, 1)
    return np.concatenate([view, panel], axis=1)


class Viewer:
    """``cv2.imshow`` where OpenCV has a GUI, else a Tk window; ``show`` returns False on close."""

    def __init__(self, title: str = "emosdk") -> None:
        import cv2

        self._cv2 = cv2
        self.title = title
        self._tk = None
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            import tkinter as tk

            self._tk = tk.Tk()
            self._tk.title(title)
            self._label = tk.Label(self._tk)
            self._label.pack()
            self._open = True
            self._tk.protocol("WM_DELETE_WINDOW", self._on_close)

    def _on_close(self) -> None:
        self._open = False

    def show(self, image: np.ndarray) -> bool:
        if self._tk is None:
            self._cv2.imshow(self.title, image)
            return (self._cv2.waitKey(1) & 0xFF) not in (27, ord("q"))
        import tkinter as tk

        rgb = np.ascontiguousarray(image[..., ::-1])
        ppm = b"P6 %d %d 255\n" % (rgb.shape[1], rgb.shape[0]) + rgb.tobytes()
        self._photo = tk.PhotoImage(data=ppm, format="PPM")  # keep a reference for Tk
        self._label.configure(image=self._photo)
        self._tk.update()
        return self._open

    def close(self) -> None:
        if self._tk is None:
            self._cv2.destroyAllWindows()
        else:
            self._tk.destroy()


def run(args: argparse.Namespace) -> int:
    config = RecognizerConfig(
        model=args.model, backend=args.backend, max_faces=1, face_detector=args.face_detector
    )
    with Recognizer(config) as rec:
        if args.input is not None:
            from .capture.media import MediaFileSource

            source: Source = MediaFileSource(args.input, realtime=not args.headless)
        else:
            from .capture.live import live_source

            mic = False if args.no_microphone else (args.microphone or True)
            cam = False if args.no_camera else args.camera
            source = live_source(mic, cam)
        viewer = None if args.headless else Viewer()
        state: dict = {
            "result": None,
            "box": None,
            "shown": 0.0,
            "fps": None,
            "screen": None,
            "open": True,
        }

        def show(frame: np.ndarray | None, redetect: bool) -> None:
            now = time.monotonic()
            if not redetect and now - state["shown"] < 1 / DISPLAY_FPS:
                return  # the display is throttled; the recognizer sees every frame it needs
            if frame is not None and (redetect or state["box"] is None):
                boxes = rec.detect_faces(frame)  # the recognizer's own detector
                state["box"] = boxes[0] if boxes else None
            if state["shown"]:
                state["fps"] = 0.8 * (state["fps"] or 0.0) + 0.2 / max(now - state["shown"], 1e-3)
            state["shown"] = now
            state["screen"] = render(frame, state["result"], rec.labels, state["box"], state["fps"])
            state["open"] = viewer.show(state["screen"])

        tee = TeeSource(source, on_frame=(lambda f: show(f, False)) if viewer else None)
        n = 0
        try:
            for result in rec.stream(source=tee):
                n += 1
                if viewer is None:
                    print(json.dumps(result.to_dict()), flush=True)
                else:
                    state["result"] = result
                    show(tee.frame, True)
                    if args.screenshot and n == args.screenshot_at:
                        import cv2

                        cv2.imwrite(str(args.screenshot), state["screen"])
                    if not state["open"]:
                        break
                if args.max_results and n >= args.max_results:
                    break
            if viewer is not None and args.hold > 0:
                print(
                    f"emosdk-demo: input finished, holding the window {args.hold:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                end = time.monotonic() + args.hold
                while time.monotonic() < end and viewer.show(state["screen"]):
                    time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        finally:
            tee.close()
            if viewer is not None:
                viewer.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emosdk-demo",
        description="Show live emotion recognition from the microphone and camera (or a "
        "recording): video with the face box, a bar per class, modality indicators, latency.",
    )
    p.add_argument("--version", action="version", version=f"emosdk {__version__}")
    p.add_argument(
        "--input",
        type=Path,
        help="a recording (mp4, flv, avi, webm, wav...) "
        "instead of the live devices, played at its own pace",
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="no window: print one JSON object per result (as fast as possible with --input)",
    )
    p.add_argument("--camera", default=0, help="OpenCV camera index or device path (default 0)")
    p.add_argument("--microphone", default=None, help="sounddevice input (index or name)")
    p.add_argument("--no-camera", action="store_true", help="microphone only")
    p.add_argument("--no-microphone", action="store_true", help="camera only")
    p.add_argument("--model", default="default", help="bundled model name or bundle folder")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    p.add_argument(
        "--face-detector",
        default="auto",
        choices=["auto", "mediapipe", "haar"],
        help="auto: mediapipe 0.10.x BlazeFace when installed, else OpenCV's Haar cascade",
    )
    p.add_argument("--max-results", type=int, default=0, help="stop after N results (0: never)")
    p.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="keep the window open this many seconds after the input ends",
    )
    p.add_argument("--screenshot", type=Path, help="also save the screen of result N as PNG")
    p.add_argument("--screenshot-at", type=int, default=4, help="N for --screenshot")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(args.camera, str) and args.camera.isdigit():
        args.camera = int(args.camera)
    if isinstance(args.microphone, str) and args.microphone.isdigit():
        args.microphone = int(args.microphone)
    if args.no_camera and args.no_microphone and args.input is None:
        print(
            "emosdk-demo: error: --no-camera and --no-microphone leave nothing to analyse",
            file=sys.stderr,
        )
        return 2
    return run_command("emosdk-demo", args.verbose, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
