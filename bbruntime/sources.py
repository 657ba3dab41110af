"""Where ``infer.py``'s images come from: image files, folders, globs, list files, videos and cameras.

Every source is resolved before any inference starts, so a missing file or a camera that does not open
fails at once (exit 2). A resolved source yields :class:`Frame` objects in order. An image file's
pixels are read by whoever consumes its frame (the decode workers), so listing a folder costs nothing;
a video's or a camera's frames are read here, in order, since a capture can only be read sequentially.
OpenCV is imported only for videos and cameras.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, SourceError
from .preprocess import IMAGE_SUFFIXES, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
LIST_SUFFIXES = (".txt", ".lst")  # a text file of image paths, one a line
GLOB_CHARACTERS = "*?["
# What the CSI camera delivers to OpenCV: the sensor's NV12 in NVMM memory, converted to BGR on the way.
CSI_WIDTH, CSI_HEIGHT, CSI_FPS = 1280, 720, 30


@dataclass(frozen=True)
class Frame:
    """One image to classify: an image file (``path``) or a decoded video/camera frame (``pixels``)."""

    source: str  # the file, or the video or camera the frame came from
    index: int | None = None  # frame number in a video or camera stream
    path: Path | None = None
    pixels: np.ndarray | None = None  # HxWx3 RGB uint8
    skippable: bool = False  # an unreadable file is skipped and counted (folders, globs, lists), not fatal

    def image(self) -> np.ndarray:
        return read_image(self.path) if self.pixels is None else self.pixels


@dataclass
class Source:
    text: str  # as given on the command line
    kind: str  # image, folder, glob, list, video, camera, stream, csi
    files: tuple[Path, ...] = ()
    capture: object | None = None  # an opened cv2.VideoCapture

    def frames(self) -> Iterator[Frame]:
        if self.capture is None:
            for path in self.files:
                yield Frame(str(path), path=path, skippable=self.kind != "image")
            return
        index = 0
        try:
            while True:
                ok, bgr = self.capture.read()
                if not ok:
                    return
                yield Frame(self.text, index, pixels=np.ascontiguousarray(bgr[..., ::-1]))
                index += 1
        finally:
            self.capture.release()


def resolve_source(text: str) -> Source:
    """What ``text`` names, opened and checked: a camera, a stream, a folder, a file or a glob."""
    if text.startswith("csi://"):
        return _csi_source(text)
    if "://" in text:
        return Source(text, "stream", capture=_opened_capture(text, text, "is the address right and reachable?"))
    if text.isdigit():
        return Source(text, "camera", capture=_opened_capture(int(text), text,
                                                              f"is a camera at /dev/video{text}?"))
    path = Path(text).expanduser()
    if path.is_dir():
        return Source(text, "folder", _images_under(path))
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return Source(text, "video", capture=_opened_capture(str(path), text, "is it a video OpenCV can decode?"))
        if suffix in LIST_SUFFIXES:
            return Source(text, "list", _listed_paths(path))
        return Source(text, "image", (path,))
    if any(c in text for c in GLOB_CHARACTERS):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not matches:
            raise SourceError(f"{text}: no file matches this pattern")
        return Source(text, "glob", tuple(matches))
    raise SourceError(f"{text}: no such file or folder")


def _images_under(folder: Path) -> tuple[Path, ...]:
    files = tuple(sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
    if not files:
        raise SourceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or below")
    return files


def _listed_paths(list_file: Path) -> tuple[Path, ...]:
    """The paths of a list file, relative ones read from the list's folder; blank and # lines ignored.
    A listed file that is missing is skipped and counted like an unreadable one."""
    lines = [line.strip() for line in list_file.read_text().splitlines()]
    paths = tuple(p if p.is_absolute() else list_file.parent / p
                  for p in (Path(line).expanduser() for line in lines if line and not line.startswith("#")))
    if not paths:
        raise SourceError(f"{list_file}: the list names no file")
    return paths


def csi_pipeline(sensor: int) -> str:
    """The GStreamer pipeline that brings a Jetson CSI camera's frames to OpenCV as BGR."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={CSI_WIDTH}, "
            f"height={CSI_HEIGHT}, framerate={CSI_FPS}/1, format=NV12 ! nvvidconv ! video/x-raw, format=BGRx ! "
            "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=2")


def _csi_source(text: str) -> Source:
    sensor = text[len("csi://"):]
    if not sensor.isdigit():
        raise SourceError(f"{text}: expected csi://N with N the sensor id (csi://0)")
    hint = (f"test the camera with `gst-launch-1.0 nvarguscamerasrc sensor-id={sensor} num-buffers=1 ! fakesink`, "
            "restart its daemon (sudo systemctl restart nvargus-daemon), and use an OpenCV built with GStreamer "
            "(JetPack's python3-opencv; pip's opencv-python has none)")
    cv2 = _cv2()
    return Source(text, "csi", capture=_opened_capture(csi_pipeline(int(sensor)), text, hint, cv2.CAP_GSTREAMER))


def _opened_capture(target, text: str, hint: str, api: int | None = None):
    cv2 = _cv2()
    capture = cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)
    if not capture.isOpened():
        raise SourceError(f"cannot open {text}: {hint}")
    return capture


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise MissingDependencyError("videos and cameras need OpenCV: pip install opencv-python-headless (on a "
                                     "Jetson, JetPack's python3-opencv, which reads CSI cameras)") from e
    return cv2
