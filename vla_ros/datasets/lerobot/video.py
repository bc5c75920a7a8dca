"""Camera frames of a LeRobot v3.0 dataset: encoded while they arrive, by one ffmpeg process per camera (or kept as
PNG), and decoded back."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import re
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from vla_ros.core.errors import MissingDependencyError
from vla_ros.datasets.lerobot.layout import DatasetError
from vla_ros.datasets.lerobot.stats import _PixelStats

VIDEO_PIX_FMT = "yuv420p"


VIDEO_GOP = 2  # a key frame every 2 frames: random access for training costs at most one extra decoded frame


VIDEO_CRF = 30


_ENCODER_OPTIONS = {"libsvtav1": ["-preset", "12"], "libx264": ["-preset", "veryfast"]}


_CODEC_NAMES = {"libsvtav1": "av1", "libx264": "h264"}  # ffmpeg encoder -> codec name LeRobot records


_ENCODERS_FOR_CODEC = {"av1": "libsvtav1", "h264": "libx264"}


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MissingDependencyError("imageio-ffmpeg", "datasets", "Video in LeRobot datasets") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


@lru_cache(maxsize=4)
def _ffmpeg_encoders(exe: str) -> frozenset[str]:
    result = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False)
    return frozenset(match.group(1) for match in re.finditer(r"^ V\S*\s+(\S+)", result.stdout, re.MULTILINE))


def available_video_encoders() -> list[str]:
    """The encoders this module can use that the ffmpeg binary has, preferred first."""
    encoders = _ffmpeg_encoders(_ffmpeg())
    return [name for name in _ENCODER_OPTIONS if name in encoders]


class _CameraSink:
    """Takes one camera's frames on a worker thread, so that add_frame() only queues them: pixel stats + storage."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.pixel_stats = _PixelStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=f"vla_ros-dataset-{key}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise DatasetError if storing an earlier frame failed (the episode cannot be saved then)."""
        if self._error is not None:
            raise DatasetError(f"{self.key}: storing frames failed: {self._error}")

    def put(self, image: np.ndarray) -> None:
        self._queue.put(image)

    def finish(self) -> None:
        """Wait until every queued frame is stored; raises DatasetError if storing failed."""
        self._queue.put(None)
        self._thread.join()
        self._close()
        if self._error is not None:
            raise DatasetError(f"{self.key}: storing frames failed: {self._error}")

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while (image := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain the queue; finish() reports the error
            try:
                self._store(image)
                self.pixel_stats.add(image)
            except Exception as exc:  # noqa: BLE001 - reported by put() and finish()
                self._error = exc

    def _store(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class _VideoSink(_CameraSink):
    """Pipes raw RGB frames into an ffmpeg process that writes the episode's mp4 for one camera."""

    def __init__(self, key: str, path: Path, *, height: int, width: int, fps: int, encoder: str, crf: int) -> None:
        self.path = path
        command = [
            _ffmpeg(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{width}x{height}",
            "-framerate",
            str(fps),
            "-i",
            "pipe:0",
            "-an",
            "-c:v",
            encoder,
            "-pix_fmt",
            VIDEO_PIX_FMT,
            "-g",
            str(VIDEO_GOP),
            "-crf",
            str(crf),
            *_ENCODER_OPTIONS[encoder],
            "-f",
            "mp4",
            str(path),
        ]
        # a file, not a pipe, for ffmpeg's messages: it must never block on its own stderr
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _close() or abort()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "SVT_LOG": "1"},  # SVT-AV1 prints its banner unless told errors only
        )
        super().__init__(key)

    def _store(self, image: np.ndarray) -> None:
        self._process.stdin.write(memoryview(image).cast("B"))

    def _close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        returncode = self._process.wait()
        self._log.seek(0)
        log = self._log.read().decode(errors="replace").strip()
        self._log.close()
        if returncode != 0 and self._error is None:
            self._error = RuntimeError(f"ffmpeg exited with status {returncode}: {log[-800:]}")

    def abort(self) -> None:
        self._process.kill()
        super().abort()
        self._process.wait()
        self._log.close()
        self.path.unlink(missing_ok=True)


class _PngSink(_CameraSink):
    """Keeps the episode's frames as PNG bytes, for "image" features stored inside the data parquet."""

    def __init__(self, key: str) -> None:
        try:
            from PIL import Image
        except ImportError as exc:
            raise MissingDependencyError("pillow", "datasets", "Storing images in LeRobot datasets") from exc
        self._image_class = Image
        self.frames: list[bytes] = []
        super().__init__(key)

    def _store(self, image: np.ndarray) -> None:
        buffer = io.BytesIO()
        self._image_class.fromarray(image).save(buffer, format="PNG", compress_level=1)  # fast; lossless anyway
        self.frames.append(buffer.getvalue())


def decode_video(
    path: Path,
    *,
    start_s: float,
    count: int,
    fps: int,
    frame_size: tuple[int, int],
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """`count` frames of an mp4 from the frame shown at `start_s`, as (count, H, W, 3) uint8 RGB.

    frame_size: (height, width) of the video; size: (height, width) to resize to (ffmpeg's area scaler).
    """
    if not path.is_file():
        raise DatasetError(f"video file {path} is missing")
    height, width = size or frame_size
    if count <= 0:
        return np.empty((0, height, width, 3), dtype=np.uint8)
    command = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    if start_s > 0:  # half a frame early: the first frame kept is the one shown at start_s, whatever the rounding
        command += ["-ss", f"{max(0.0, start_s - 0.5 / fps):.6f}"]
    command += ["-i", str(path), "-map", "0:v:0", "-frames:v", str(count)]
    if size is not None:
        command += ["-vf", f"scale={width}:{height}:flags=area"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    buffer = memoryview(frames).cast("B")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        filled = 0
        while filled < len(buffer):  # read straight into the array: no second copy of a long episode
            read = process.stdout.readinto(buffer[filled:])
            if not read:
                break
            filled += read
        process.stdout.close()
        returncode = process.wait()
        log.seek(0)
        message = log.read().decode(errors="replace").strip()
    decoded = filled // (height * width * 3)
    if returncode != 0 or decoded < count:
        raise DatasetError(
            f"{path}: decoded {decoded} of {count} frames from {start_s:.3f} s"
            + (f" (ffmpeg: {message[-500:]})" if message else "")
        )
    return frames


def count_video_frames(path: Path) -> int:
    """Frames in an mp4's first video stream (its packets, counted without decoding)."""
    result = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    counts = re.findall(r"frame=\s*(\d+)", result.stderr)
    if result.returncode != 0 or not counts:
        raise DatasetError(f"{path}: not a readable video ({result.stderr.strip()[-300:]})")
    return int(counts[-1])
