"""`cifar-run`: classify images, a video file or a camera with LiteRT or ONNX Runtime."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cifar_edge.runtime.calibration import TARGET_ACCURACY
from cifar_edge.runtime.classifier import DEFAULT_MODEL, Classifier, packaged_models
from cifar_edge.runtime.engines import DEVICES, ENGINES
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, positive_int, run_cli
from cifar_edge.runtime.files import atomic_path, check_output_file
from cifar_edge.runtime.integrity import SKIP_FLAG
from cifar_edge.runtime.labels import NUM_CLASSES
from cifar_edge.runtime.preprocess import FITS
from cifar_edge.runtime.runner import Result, RunStats, annotate, classify_frames
from cifar_edge.runtime.sources import Camera, FrameSource, ImageFiles, SourceError, VideoFile
from cifar_edge.runtime.zoom import Zoom

WINDOW = "cifar-run"
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="cifar-run",
        description="Classify image files, a video file or a camera with an exported CIFAR-10 model, without TensorFlow.",
        epilog="Labels go to stdout (JSON Lines with --json); errors and the closing summary go to stderr. "
        "Exit 1 if any input failed, 2 for bad arguments or models, 130 on Ctrl-C.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders (searched recursively) or globs")
    parser.add_argument(
        "--model", metavar="PATH|NAME",
        help=f"a .tflite, .onnx or .keras file, an export folder, or a packaged name "
        f"({', '.join(packaged_models()) or 'none installed'}; default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--camera", nargs="?", const="0", metavar="INDEX|DEVICE|URL|csi",
        help="classify a live camera: an index (default 0), /dev/videoN, a stream URL, or csi for a Pi camera module (picamera2)",
    )
    parser.add_argument("--video", metavar="FILE", help="classify every frame of a video file")
    parser.add_argument("--top-k", type=positive_int, default=1, metavar="K", help="classes to report per image (default: 1)")
    parser.add_argument("--json", action="store_true", help="print JSON Lines, one object per image or frame")
    parser.add_argument("--show", action="store_true", help="show frames with label, score and FPS (q or Esc quits)")
    parser.add_argument("--save", metavar="OUT.mp4", help="write the annotated video (.mp4 or .avi)")
    parser.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after reading this many frames or images")
    parser.add_argument("--every", type=positive_int, default=1, metavar="N", help="classify every N-th frame (default: 1, all)")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help="default: by file suffix")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="gpu needs ONNX Runtime's CUDA/TensorRT providers or a Keras GPU backend")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="engine threads (default: the engine's choice)")
    parser.add_argument("--fit", choices=FITS, default="crop", help="how non-square images become square (default: crop)")
    parser.add_argument(
        "--min-score", type=_min_score, default="auto", metavar="auto|P",
        help="answer 'unknown' when the calibrated top score is below P; auto: the threshold in the model's "
        f"calibration, chosen so that accepted answers are {TARGET_ACCURACY * 100:.0f}%% right on held-out images; 0: always name a class "
        "(default: auto)",
    )
    parser.add_argument(
        "--zoom", type=zoom_setting, default="auto", metavar="auto|F[:W][,F[:W]...]",
        help="also try centred crops of these fractions of the frame's square, keeping the most confident answer, "
        "for subjects that fill only part of the frame; with a weight W on every fraction (e.g. 1:0.75,0.75:0.25), "
        "answer with the weighted mean of the views instead; each fraction costs one more inference; auto: the setting "
        "the model's manifest carries, with its threshold, else 1, the whole square (default: auto)",
    )
    parser.add_argument(SKIP_FLAG, action="store_true",
                        help="use a model file even though it differs from the sha256 in the manifest beside it (a file you changed on purpose)")
    parser.add_argument("--info", action="store_true", help="describe the resolved model and exit (unless inputs are given too)")
    return parser


def zoom_setting(text: str) -> Zoom | str:
    """`--zoom`: `auto`, or comma-separated fractions above 0 and at most 1, each with `:W`, a positive
    weight, or none with one."""
    if text == "auto":
        return text
    try:
        return Zoom.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"auto, or {error}") from None


def _min_score(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected auto or a number from 0 to 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    return run_cli("cifar-run", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    kinds = [kind for kind, given in (("PATH", args.paths), ("--video", args.video is not None), ("--camera", args.camera is not None)) if given]
    if len(kinds) > 1:
        parser.error(f"give image PATHs, --video or --camera, one kind per run (got {' and '.join(kinds)})")
    if not kinds and not args.info:
        parser.error("nothing to classify: give image PATHs, --video FILE or --camera")
    if args.top_k > NUM_CLASSES:
        parser.error(f"--top-k {args.top_k}: the model has only {NUM_CLASSES} classes")
    if args.save is not None:
        if args.paths:
            parser.error("--save writes a video: use it with --video or --camera")
        if Path(args.save).suffix.lower() not in VIDEO_CODECS:
            parser.error(f"--save {args.save}: use a .mp4 or .avi file name")
        saved = check_output_file(args.save, "--save")
        if args.video is not None and Path(args.video).is_file() and saved.exists() and saved.samefile(args.video):
            parser.error(f"--save {args.save}: is the input video itself; choose another file name")
    if args.show:
        _check_gui()

    classifier = Classifier(args.model, engine=args.engine, device=args.device, threads=args.threads, fit=args.fit,
                            min_score=args.min_score, zoom=args.zoom, check_integrity=not args.skip_integrity_check)
    if classifier.calibration is None:
        print(f"cifar-run: notice: {classifier.model.path.name} carries no calibration (exported before it, or from a model "
              "trained without --holdout): its scores are raw" + (", and no answer is 'unknown'" if args.min_score == "auto" else ""),
              file=sys.stderr)
    if args.info:
        _print_info(classifier.info(), args.json)
        if not kinds:
            return 0

    with ExitStack() as stack:
        source = stack.enter_context(_open_source(args))
        save = stack.enter_context(_video_saver(args.save, source.fps)) if args.save else None
        stats = RunStats(unit="frames" if source.is_stream else "images")
        stopped: BaseException | None = None
        try:
            classify_frames(
                classifier, source, top_k=args.top_k, every=args.every, max_frames=args.max_frames,
                on_result=_Output(args, source, stats, save), stats=stats,
            )
        except _Quit:
            pass
        except (KeyboardInterrupt, SourceError) as reason:
            # Keep what was done: the summary is printed and a saved video is completed.
            stopped = reason
    print(f"cifar-run: {stats.summary_line()}", file=sys.stderr)
    if isinstance(stopped, KeyboardInterrupt):
        print("cifar-run: interrupted", file=sys.stderr)
        return 130
    if stopped is not None:
        raise stopped
    return 1 if stats.errors else 0


class _Quit(Exception):
    """The user closed the --show window."""


#: The advice for a window: one OpenCV wheel with a GUI, on the 4.x line we test (5.0 changed APIs).
GUI_OPENCV_ADVICE = "pip uninstall -y opencv-python-headless && pip install 'opencv-python>=4.10,<5'"


def _check_gui() -> None:
    """Fail in one line, before any work, where a window cannot open (two OpenCVs, no display, no GUI).

    Without a display, Qt's OpenCV aborts the whole process (exit 134, no summary) when the
    window opens, so the display is checked first, without touching OpenCV's GUI.
    """
    import cv2

    wheels = installed_opencv_wheels()
    if len(wheels) > 1:
        raise CifarEdgeError(f"--show: {' and '.join(wheels)} are both installed and overwrite each other's cv2 folder; "
                             f"pip uninstall -y {' '.join(wheels)}, then pip install 'opencv-python>=4.10,<5'")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise CifarEdgeError("--show: no display here (DISPLAY is not set); use --save OUT.mp4 or --json instead")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        raise CifarEdgeError(f"--show: this OpenCV has no GUI (opencv-python-headless); {GUI_OPENCV_ADVICE}; or use --save") from None


def installed_opencv_wheels() -> list[str]:
    """The OpenCV distributions installed here; two or more share, and break, one cv2 folder."""
    from importlib import metadata

    found = []
    for name in ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def _open_source(args) -> FrameSource:
    if args.video is not None:
        return VideoFile(args.video)
    if args.camera is not None:
        return Camera(args.camera)
    return ImageFiles(args.paths)


@contextmanager
def _video_saver(path: str, fps: float | None):
    """A function that appends BGR frames to `path`, which appears only once complete."""
    import cv2

    target = Path(path)
    with atomic_path(target) as temporary:
        writer = None

        def write(bgr):
            nonlocal writer
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[target.suffix.lower()])
                writer = cv2.VideoWriter(str(temporary), fourcc, fps or 30.0, (bgr.shape[1], bgr.shape[0]))
                if not writer.isOpened():
                    raise CifarEdgeError(f"--save {path}: OpenCV cannot write this video format here")
            writer.write(bgr)

        try:
            yield write
        finally:
            if writer is not None:
                writer.release()


class _Output:
    """Prints each result, and feeds the window and the video writer."""

    def __init__(self, args, source: FrameSource, stats: RunStats, save):
        self.args, self.source, self.stats, self.save = args, source, stats, save
        self.last_predictions = self.last_answer = None

    def __call__(self, result: Result) -> None:
        frame = result.frame
        if result.predictions is not None:
            self.last_predictions, self.last_answer = result.predictions, result.answer
            print(self._record(result), flush=self.source.is_stream)
        elif frame.error is not None:
            if self.args.json:
                print(json.dumps({"source": frame.source, **self._frame_field(frame), "error": frame.error}), flush=True)
            else:
                print(f"cifar-run: error: {frame.source}: {frame.error}", file=sys.stderr, flush=True)
        if frame.image is not None and (self.args.show or self.save):
            # Skipped frames (--every) keep the last label, so the video shows every frame.
            bgr = annotate(frame.image, self.last_predictions, self.stats.fps if self.source.is_stream else None, self.last_answer)
            if self.save:
                self.save(bgr)
            if self.args.show:
                import cv2

                cv2.imshow(WINDOW, bgr)
                if cv2.waitKey(1 if self.source.is_stream else 0) & 0xFF in (ord("q"), 27):
                    raise _Quit

    def _frame_field(self, frame) -> dict:
        return {"frame": frame.index} if self.source.is_stream else {}

    def _record(self, result: Result) -> str:
        best, frame = result.answer, result.frame
        if self.args.json:
            return json.dumps({
                "source": frame.source,
                **self._frame_field(frame),
                "label": best.label,
                "class_id": best.class_id,
                "score": round(best.score, 6),
                "top_k": [{"label": p.label, "class_id": p.class_id, "score": round(p.score, 6)} for p in result.predictions],
                "latency_ms": round(result.latency_ms, 3),
            })
        where = f"{frame.source} #{frame.index}" if self.source.is_stream else frame.source
        others = ", ".join(f"{p.label} {p.score:.3f}" for p in result.predictions[1:])
        if best.class_id is None:
            guess = result.predictions[0]
            return f"{where}: {best.label} (best guess: {guess.label} {guess.score:.2f}" + (f"; {others})" if others else ")")
        return f"{where}: {best.label} {best.score:.3f}" + (f" ({others})" if others else "")


def _print_info(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info))
        return
    for key, value in info.items():
        if value is not None:
            print(f"{key}: {_plain(value)}")


def _shape(dims) -> str:
    return "×".join("N" if dim is None else str(dim) for dim in dims)


def _plain(value) -> str:
    """A value as a person reads it: lists comma-separated, mappings as `key value` pairs, no Python reprs."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shape(item) if key == 'shape' else _plain(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(item) for item in value) if value else "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
