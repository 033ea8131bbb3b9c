"""Convert MediaPipe's Face Landmarker models to ONNX once, and check them (dev time only).

Never imported by the runtime. Runs in a venv of its own (TensorFlow pins numpy < 2 and an old
onnx); see tools/requirements-mediapipe-convert.txt:

    python3 -m venv /work/venvs/mpconvert
    /work/venvs/mpconvert/bin/pip install -r tools/requirements-mediapipe-convert.txt

Subcommands (run from the repository root; the runtime package is imported from sdk/):

    convert    face_landmarker.task -> face_detector.onnx, face_landmarks.onnx,
               face_blendshapes.onnx (tf2onnx, opset 17; clean input/output names; the
               landmark model's PRelu rewritten as x + (s - 1) * min(x, 0); provenance in the
               ONNX metadata); prints the model.json entries.
    check      the ONNX files against the TFLite reference (ai-edge-litert) on real frames:
               raw outputs, and boxes, keypoints, landmarks, presence and blendshapes through
               the runtime's own pre- and post-processing; exits 1 above the tolerances.
    reference  writes tests/data/mediapipe_reference.npz: the TFLite pipeline's outputs on a
               fixed set of real frames, for the repo tests (which run without TensorFlow).
    mediapipe  (in a venv with mediapipe 0.10.x, e.g. /work/venvs/mediapipe) compares the
               runtime with mediapipe's own FaceLandmarker on the same frames.
    fp16w      (the project's venv) copies of the three graphs with the landmark and blendshape
               weights stored as float16 (their TFLite source's precision: the weights
               round-trip exactly); checks that the runtime's tracker gives bit-identical
               landmarks, presence and blendshapes on real frames, writes report.json and,
               with --card, the perception card with the new files' SHA-256.

    python tools/convert_mediapipe.py convert --out sdk/emosdk/models/bundled/default
    python tools/convert_mediapipe.py check
    python tools/convert_mediapipe.py reference
    python tools/convert_mediapipe.py fp16w --out runs/bundle/perception_v2 \
        --card runs/face/model_json_snippet.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sdk"))

TASK = REPO.parent / "shared" / "models" / "face_landmarker.task"
DATA = REPO.parent / "shared" / "data"
BUNDLE = REPO / "sdk" / "emosdk" / "models" / "bundled" / "default"
REFERENCE = REPO / "tests" / "data" / "mediapipe_reference.npz"
SAMPLES = REPO / "sdk" / "emosdk" / "samples"
TASK_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
TFLITE_SHA256 = {
    "face_detector.tflite": "b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f",
    "face_landmarks_detector.tflite": (
        "c7d54204ce0448474c7f3fa9af494787c0965cbdd6f20fc72867e43046bd43d5"
    ),
    "face_blendshapes.tflite": "4f36dded049db18d76048567439b2a7f58f1daabc00d78bfe8f3ad396a2d2082",
}
# tflite file -> (onnx file, {old input: new}, {old output: new})
MODELS = {
    "face_detector.tflite": (
        "face_detector.onnx",
        {"input": "image"},
        {"regressors": "regressors", "classificators": "classificators"},
    ),
    "face_landmarks_detector.tflite": (
        "face_landmarks.onnx",
        {"input_12": "image"},
        {"Identity": "landmarks", "Identity_1": "presence", "Identity_2": "unused_score"},
    ),
    "face_blendshapes.tflite": (
        "face_blendshapes.onnx",
        {"serving_default_input_points:0": "points"},
        {"StatefulPartitionedCall:0": "blendshapes"},
    ),
}
PROVENANCE = (
    "Converted from MediaPipe Face Landmarker float16/1 (face_landmarker.task, SHA-256 "
    f"{TASK_SHA256}; Google, Apache-2.0) with tf2onnx 1.17.0 (opset 17) by "
    "tools/convert_mediapipe.py; fp16 weights stored as fp32."
)
# Tolerances of the check (ONNX Runtime vs the TFLite reference, same inputs). Measured maxima
# are printed next to them; see docs/face.md.
TOL = {
    "detector_raw": 2e-3,  # regressors (input pixels) and logits
    "box_px": 0.05,  # box corners and keypoints, frame pixels
    "landmarks_raw": 5e-3,  # input pixels of the 256x256 crop
    "landmarks_px": 0.01,
    "presence": 1e-4,
    "blendshapes": 1e-4,
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract(task: Path, into: Path) -> dict[str, Path]:
    """The three tflite files of the .task, each checked against its known SHA-256."""
    got = sha256(task)
    if got != TASK_SHA256:
        raise SystemExit(f"{task}: SHA-256 {got}, expected {TASK_SHA256}")
    out = {}
    with zipfile.ZipFile(task) as z:
        for name, want in TFLITE_SHA256.items():
            path = into / name
            path.write_bytes(z.read(name))
            if sha256(path) != want:
                raise SystemExit(f"{task}!{name}: SHA-256 {sha256(path)}, expected {want}")
            out[name] = path
    return out


# -- convert ------------------------------------------------------------------------------------


def rewrite_prelu(model) -> int:
    """PRelu(x, s) -> x + (s - 1) * min(x, 0) (ONNX Runtime's CPU PRelu is slow: 59 % of the
    landmark model's time); exact for any x."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes, n = [], 0
    zero = "prelu_rewrite_zero"
    for node in g.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            nodes.append(node)
            continue
        x, s = node.input
        slope = numpy_helper.to_array(inits[s]).astype(np.float32)
        sm1 = f"{s}__minus_one"
        if sm1 not in inits:
            t = numpy_helper.from_array(slope - 1.0, sm1)
            g.initializer.append(t)
            inits[sm1] = t
        base = f"{node.name or 'prelu'}_{n}"
        nodes += [
            helper.make_node("Min", [x, zero], [f"{base}_neg"], name=f"{base}_min"),
            helper.make_node("Mul", [f"{base}_neg", sm1], [f"{base}_scaled"], name=f"{base}_mul"),
            helper.make_node("Add", [x, f"{base}_scaled"], list(node.output), name=f"{base}_add"),
        ]
        n += 1
    if n:
        g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        del g.node[:]
        g.node.extend(nodes)
    return n


def rename_io(model, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    mapping = {**inputs, **outputs}
    for node in model.graph.node:
        node.input[:] = [mapping.get(i, i) for i in node.input]
        node.output[:] = [mapping.get(o, o) for o in node.output]
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.name = mapping.get(vi.name, vi.name)


def canonical_names(model) -> None:
    """Rename initializers by first use and order them so (readable, stable names). tf2onnx's
    rewrites still order nodes differently from run to run, so two conversions are equivalent
    (``check`` proves it) but not byte-identical: the shipped files are pinned by SHA-256."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    mapping: dict[str, str] = {}
    for node in g.node:
        for name in node.input:
            if name in inits and name not in mapping:
                mapping[name] = f"const_{len(mapping)}"
    for node in g.node:
        node.input[:] = [mapping.get(i, i) for i in node.input]
    used = [t for t in g.initializer if t.name in mapping]  # unused ones (PRelu slopes) go
    ordered = sorted(used, key=lambda t: int(mapping[t.name].split("_")[1]))
    for t in ordered:
        t.name = mapping[t.name]
    kept = [type(t)() for t in ordered]
    for k, t in zip(kept, ordered):
        k.CopyFrom(t)
    del g.initializer[:]
    g.initializer.extend(kept)


def cmd_convert(args) -> int:
    import onnx
    import tf2onnx

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    with tempfile.TemporaryDirectory() as tmp:
        tfl = extract(Path(args.task), Path(tmp))
        for name, (onnx_name, ins, outs) in MODELS.items():
            model, _ = tf2onnx.convert.from_tflite(str(tfl[name]), opset=17)
            rename_io(model, ins, outs)
            n = rewrite_prelu(model) if not args.keep_prelu else 0
            canonical_names(model)
            model.doc_string = PROVENANCE
            meta = {
                "source": f"face_landmarker.task!{name}",
                "source_sha256": TFLITE_SHA256[name],
                "licence": "Apache-2.0 (MediaPipe, Google)",
                "converter": f"tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}, opset 17",
                "prelu_rewritten": str(n),
            }
            del model.metadata_props[:]
            for k, v in meta.items():
                model.metadata_props.add(key=k, value=v)
            model.producer_name = "emosdk tools/convert_mediapipe.py"
            onnx.checker.check_model(model, full_check=True)
            path = out / onnx_name
            onnx.save(model, str(path))
            entries[onnx_name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
            print(f"{onnx_name}: {path.stat().st_size} bytes, {n} PRelu rewritten, {sha256(path)}")
    print(json.dumps(model_json_entries(out), indent=2))
    return 0


def model_json_entries(folder: Path) -> dict:
    """The graphs/files/model-card entries for the bundle's model.json."""
    import onnxruntime as ort

    graphs, files = {}, {}
    roles = {
        "face_detector.onnx": "face_detector",
        "face_landmarks.onnx": "face_landmarks",
        "face_blendshapes.onnx": "face_blendshapes",
    }
    for f, role in roles.items():
        s = ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"])

        def spec(t):
            shape = [d if isinstance(d, int) else "B" for d in t.shape]
            return {"name": t.name, "shape": shape, "dtype": "float32"}

        graphs[role] = {
            "file": f,
            "inputs": [spec(t) for t in s.get_inputs()],
            "outputs": [spec(t) for t in s.get_outputs()],
        }
        files[f] = sha256(folder / f)
    return {
        "graphs": graphs,
        "files": files,
        "model_card": {
            "face_perception": {
                "source": "MediaPipe Face Landmarker float16/1 (face_landmarker.task)",
                "source_sha256": TASK_SHA256,
                "source_files_sha256": TFLITE_SHA256,
                "licence": "Apache-2.0 (Copyright Google LLC, MediaPipe)",
                "conversion": PROVENANCE,
                "checked": "tools/convert_mediapipe.py check: ONNX Runtime vs ai-edge-litert "
                "on CREMA-D, CK+ and FER2013 frames (tolerances in docs/face.md)",
            }
        },
    }


# -- real frames ------------------------------------------------------------------------------


def real_frames(step: int = 15, n_images: int = 12) -> list[tuple[str, np.ndarray]]:
    """(id, BGR uint8 frame): CREMA-D clip frames, and CK+ / FER2013 faces padded into a frame.

    CK+ and FER2013 images are 48x48 face crops, too tight for a detector; they are upscaled
    3x and centred on a 288x288 mid-grey canvas (see :func:`pad_face`).
    """
    from emosdk.capture.media import read_media

    out = []
    for clip in sorted((REPO / "tests" / "data" / "cremad").glob("1001_*.flv")):
        _, frames = read_media(clip)
        for i in range(0, len(frames), step):
            out.append((f"cremad/{clip.name}#{i}", frames[i][1]))
    for corpus, prefix in (("ckplus48", ""), ("fer2013", "PublicTest/")):
        rows = (DATA / corpus / "manifest.csv").read_text().splitlines()[1:]
        rows = [r.split(",")[0] for r in rows if r.split(",")[0].startswith(prefix)]
        for f in rows[:: max(1, len(rows) // n_images)][:n_images]:
            out.append((f"{corpus}/{f}", pad_face(load_grey(DATA / corpus / f))))
    return out


def load_grey(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return img


def pad_face(grey: np.ndarray, scale: int = 3, canvas: int = 288) -> np.ndarray:
    """A 48x48 face crop as a BGR frame: upscaled ``scale``x by pixel repetition (exact on every
    platform, so the repo tests rebuild the same frame), centred on a mid-grey canvas."""
    big = np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1)
    out = np.full((canvas, canvas), 128, np.uint8)
    y = (canvas - big.shape[0]) // 2
    x = (canvas - big.shape[1]) // 2
    out[y : y + big.shape[0], x : x + big.shape[1]] = big
    return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2))


# -- TFLite-backed versions of the runtime classes ----------------------------------------------


class LiteRT:
    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=1)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.outs = self.it.get_output_details()

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if list(self.inp["shape"]) != list(x.shape):
            self.it.resize_tensor_input(self.inp["index"], list(x.shape))
            self.it.allocate_tensors()
            self.inp = self.it.get_input_details()[0]
            self.outs = self.it.get_output_details()
        self.it.set_tensor(self.inp["index"], x.astype(np.float32))
        self.it.invoke()
        return {o["name"]: self.it.get_tensor(o["index"]).copy() for o in self.outs}


def reference_models(tfl: dict[str, Path], onnx_dir: Path):
    """(ORT detector, ORT landmarker, TFLite detector, TFLite landmarker): the runtime's classes,
    the second pair with their graph calls swapped for the TFLite interpreter."""
    from emosdk.perception.blazeface import BlazeFaceDetector
    from emosdk.perception.landmarks import FaceLandmarker

    det = BlazeFaceDetector(onnx_dir / "face_detector.onnx")
    lmk = FaceLandmarker(onnx_dir / "face_landmarks.onnx", onnx_dir / "face_blendshapes.onnx")
    rdet = BlazeFaceDetector(onnx_dir / "face_detector.onnx")
    rlmk = FaceLandmarker(onnx_dir / "face_landmarks.onnx", onnx_dir / "face_blendshapes.onnx")
    d_ref = LiteRT(tfl["face_detector.tflite"])
    l_ref = LiteRT(tfl["face_landmarks_detector.tflite"])
    b_ref = LiteRT(tfl["face_blendshapes.tflite"])

    def run_det(x):
        o = d_ref(x)
        return o["regressors"], o["classificators"]

    def run_lm(x):
        outs = [l_ref(x[i : i + 1]) for i in range(len(x))]
        lm = np.concatenate([o["Identity"].reshape(1, -1) for o in outs])
        pres = np.concatenate([o["Identity_1"].reshape(1) for o in outs])
        return lm, pres

    def run_bs(p):
        return b_ref(p)["StatefulPartitionedCall:0"].reshape(-1)

    rdet.run = run_det
    rlmk.run_landmarks = run_lm
    rlmk.run_blendshapes = run_bs
    return det, lmk, rdet, rlmk


def pipeline(det, lmk, frame) -> dict[str, np.ndarray]:
    """Detection, landmarks from the best detection's region, blendshapes: one frame."""
    from emosdk.perception.blazeface import preprocess
    from emosdk.perception.landmarks import roi_from_keypoints

    tensor, _ = preprocess(frame)
    reg, cls = det.run(tensor)
    dets = det.detections(frame)
    out = {
        "raw_regressors": reg.reshape(896, 16),
        "raw_logits": cls.reshape(896),
        "n_faces": np.int64(len(dets)),
    }
    if not dets:
        return out
    d = dets[0]
    roi = roi_from_keypoints(d.box, d.keypoints)
    raw_lm, _ = lmk.run_landmarks(lmk.preprocess(frame, roi)[None])
    mesh = lmk.mesh(frame, [roi])[0]
    out.update(
        box=np.float32(d.box),
        keypoints=d.keypoints,
        score=np.float32(d.score),
        roi=np.float32([roi.cx, roi.cy, roi.width, roi.height, roi.rotation]),
        raw_landmarks=raw_lm.reshape(-1),
        landmarks=mesh.landmarks,
        presence=np.float32(mesh.presence),
        blendshapes=lmk.blendshapes(mesh.landmarks),
    )
    return out


def cmd_check(args) -> int:
    onnx_dir = Path(args.onnx)
    worst: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tfl = extract(Path(args.task), Path(tmp))
        det, lmk, rdet, rlmk = reference_models(tfl, onnx_dir)
        frames = real_frames()
        n_found = 0
        for fid, frame in frames:
            a, b = pipeline(det, lmk, frame), pipeline(rdet, rlmk, frame)
            pairs = {
                "detector_raw": ("raw_regressors", "raw_logits"),
                "box_px": ("box", "keypoints"),
                "landmarks_raw": ("raw_landmarks",),
                "landmarks_px": ("landmarks",),
                "presence": ("presence",),
                "blendshapes": ("blendshapes",),
            }
            if int(a["n_faces"]) != int(b["n_faces"]):
                print(f"FAIL {fid}: {a['n_faces']} faces (ONNX) vs {b['n_faces']} (TFLite)")
                worst["faces"] = float("inf")
                continue
            n_found += int(a["n_faces"]) > 0
            for key, fields in pairs.items():
                for f in fields:
                    if f in a:
                        err = float(np.max(np.abs(np.asarray(a[f]) - np.asarray(b[f]))))
                        worst[key] = max(worst.get(key, 0.0), err)
            if "blendshapes" in a and fid.startswith("cremad"):
                i = 45  # mouthSmileLeft
                print(
                    f"{fid}: score {a['score']:.3f} presence {a['presence']:.3f} "
                    f"mouthSmileLeft {a['blendshapes'][i]:.3f}"
                )
    print(f"{len(frames)} frames, a face in {n_found}")
    ok = True
    for key, tol in TOL.items():
        got = worst.get(key, float("nan"))
        flag = "ok" if got <= tol else "FAIL"
        ok &= got <= tol
        print(f"{key:15s} max |ONNX - TFLite| = {got:.3g}  (tolerance {tol:g})  {flag}")
    if worst.get("faces") == float("inf"):
        ok = False
    return 0 if ok else 1


def cmd_reference(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tfl = extract(Path(args.task), Path(tmp))
        _, _, rdet, rlmk = reference_models(tfl, Path(args.onnx))
        frames = real_frames(step=args.step, n_images=args.images)
        store: dict[str, np.ndarray] = {}
        ids = []
        for fid, frame in frames:
            res = pipeline(rdet, rlmk, frame)
            if int(res["n_faces"]) == 0:
                print(f"{fid}: no face (kept: the test checks the runtime finds none too)")
            ids.append(fid)
            k = len(ids) - 1
            for name, v in res.items():
                if name.startswith("raw_"):
                    continue  # the tests compare decoded results; raw tensors are large
                store[f"{k}/{name}"] = np.asarray(v)
        store["ids"] = np.array(ids)
        store["about"] = np.array(
            "TFLite (ai-edge-litert) reference of MediaPipe Face Landmarker float16/1 through "
            "emosdk's pre/post-processing; written by tools/convert_mediapipe.py reference"
        )
        out = Path(args.out)
        np.savez_compressed(out, **store)
        print(f"wrote {out} ({out.stat().st_size} bytes, {len(ids)} frames)")
    return 0


# -- mediapipe parity (run in a venv with mediapipe 0.10.x) --------------------------------------


def cmd_mediapipe(args) -> int:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from emosdk.perception.blazeface import BlazeFaceDetector
    from emosdk.perception.landmarks import FaceLandmarker, roi_from_keypoints

    onnx_dir = Path(args.onnx)
    det = BlazeFaceDetector(onnx_dir / "face_detector.onnx")
    lmk = FaceLandmarker(onnx_dir / "face_landmarks.onnx", onnx_dir / "face_blendshapes.onnx")
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(args.task)),
        output_face_blendshapes=True,
        num_faces=1,
        running_mode=vision.RunningMode.IMAGE,
    )
    lm_err, bs_err, eye_err = [], [], []
    with vision.FaceLandmarker.create_from_options(opts) as mpl:
        for fid, frame in real_frames():
            h, w = frame.shape[:2]
            rgb = np.ascontiguousarray(frame[..., ::-1])
            res = mpl.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            dets = det.detections(frame)
            if not res.face_landmarks or not dets:
                print(f"{fid}: mediapipe {len(res.face_landmarks)} faces, ours {len(dets)}")
                continue
            ref = np.array([[p.x * w, p.y * h] for p in res.face_landmarks[0]], np.float32)
            ref_bs = np.array([c.score for c in res.face_blendshapes[0]], np.float32)
            d = dets[0]
            mesh = lmk.mesh(frame, [roi_from_keypoints(d.box, d.keypoints)])[0]
            ours_bs = lmk.blendshapes(mesh.landmarks)
            iod = float(np.linalg.norm(ref[33] - ref[263]))
            lm_err.append(float(np.abs(mesh.landmarks[:, :2] - ref).max()) / iod)
            eye_err.append(float(np.linalg.norm(mesh.landmarks[468, :2] - ref[468])) / iod)
            bs_err.append(float(np.abs(ours_bs - ref_bs).max()))
    print(f"frames compared: {len(lm_err)}")
    print(
        f"landmarks: max |ours - mediapipe| / eye-corner distance: median "
        f"{np.median(lm_err):.4f}, max {np.max(lm_err):.4f}"
    )
    print(f"right iris centre error / eye-corner distance: max {np.max(eye_err):.4f}")
    print(f"blendshapes: max abs diff median {np.median(bs_err):.4f}, max {np.max(bs_err):.4f}")
    return 0


def cmd_fp16w(args: argparse.Namespace) -> int:
    import shutil

    import av
    import onnx
    from onnx import numpy_helper

    from emosdk.export.quantize import fp16_weights
    from emosdk.models.bundle import sha256_file
    from emosdk.perception.blazeface import BlazeFaceDetector
    from emosdk.perception.landmarks import FaceLandmarker, FaceMeshTracker

    src, dst = Path(args.onnx), Path(args.out)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "face_detector.onnx", dst / "face_detector.onnx")
    report: dict = {}
    for name in ("face_landmarks", "face_blendshapes"):
        fp16_weights(src / f"{name}.onnx", dst / f"{name}.onnx")
        before = {t.name: t for t in onnx.load(str(src / f"{name}.onnx")).graph.initializer}
        worst = 0.0
        for init in onnx.load(str(dst / f"{name}.onnx")).graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT16:  # stored as X_fp16, cast to X
                a = numpy_helper.to_array(before[init.name.removesuffix("_fp16")])
                stored = numpy_helper.to_array(init).astype(np.float32)
                worst = max(worst, float(np.abs(stored - a).max()))
        report[name] = {
            "max_weight_roundtrip_error": worst,
            "bytes_before": (src / f"{name}.onnx").stat().st_size,
            "bytes_after": (dst / f"{name}.onnx").stat().st_size,
        }
    frames = []
    for clip in sorted(SAMPLES.glob("*.flv")):
        with av.open(str(clip)) as c:
            frames += [f.to_ndarray(format="bgr24") for i, f in enumerate(c.decode(video=0))
                       if i % 15 == 0]  # fmt: skip
    outs = {}
    for tag, d in (("fp32", src), ("fp16w", dst)):
        tracker = FaceMeshTracker(
            BlazeFaceDetector(src / "face_detector.onnx"),
            FaceLandmarker(d / "face_landmarks.onnx", d / "face_blendshapes.onnx"),
            blendshapes=True,
        )
        outs[tag] = [tracker.detect(f) for f in frames]
    diff = {"landmarks": 0.0, "presence": 0.0, "blendshapes": 0.0}
    faces = 0
    for a, b in zip(outs["fp32"], outs["fp16w"]):
        if len(a) != len(b):
            raise SystemExit("the fp16-weight graphs track a different number of faces")
        for x, y in zip(a, b):
            faces += 1
            diff["landmarks"] = max(
                diff["landmarks"], float(np.abs(x.landmarks - y.landmarks).max())
            )
            diff["presence"] = max(diff["presence"], abs(float(x.presence) - float(y.presence)))
            diff["blendshapes"] = max(
                diff["blendshapes"], float(np.abs(x.blendshapes - y.blendshapes).max())
            )
    report["real_frames"] = {"frames": len(frames), "faces": faces, "max_abs_diff": diff}
    (dst / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    if args.card:
        card = json.loads(Path(args.card).read_text())
        for f in ("face_detector.onnx", "face_landmarks.onnx", "face_blendshapes.onnx"):
            card["files"][f] = sha256_file(dst / f)
        fp = card["model_card"]["face_perception"]
        fp["conversion"] = fp["conversion"].replace("; fp16 weights stored as fp32.", ".")
        card["model_card"]["face_perception"]["conversion"] += (
            " The landmark and blendshape graphs store their weights as float16 (the source's "
            "own precision: they round-trip exactly), cast to float32 when ONNX Runtime loads them."
        )
        (dst / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    if faces == 0 or any(v > 0.0 for v in diff.values()):
        print("fp16-weight graphs differ from the float32 ones (or no face was found)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", type=Path, default=TASK, help="face_landmarker.task")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--out", default=str(BUNDLE))
    c.add_argument("--keep-prelu", action="store_true", help="do not rewrite PRelu")
    for name in ("check", "reference", "mediapipe"):
        s = sub.add_parser(name)
        s.add_argument("--onnx", default=str(BUNDLE), help="folder with the three ONNX files")
        if name == "reference":
            s.add_argument("--out", default=str(REFERENCE))
            s.add_argument("--step", type=int, default=20, help="every n-th frame of the clips")
            s.add_argument("--images", type=int, default=6, help="CK+ and FER2013 images each")
    f = sub.add_parser("fp16w")
    f.add_argument("--onnx", default=str(BUNDLE), help="folder with the three ONNX files")
    f.add_argument("--out", required=True)
    f.add_argument("--card", help="perception card (model.json snippet) to update")
    args = p.parse_args(argv)
    return {
        "fp16w": cmd_fp16w,
        "convert": cmd_convert,
        "check": cmd_check,
        "reference": cmd_reference,
        "mediapipe": cmd_mediapipe,
    }[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
