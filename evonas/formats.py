"""Standard dataset files read into numpy arrays (uint8 stays uint8), and a checksummed download.

- IDX (MNIST, Fashion-MNIST), plain or gzipped: `read_idx`.
- CIFAR-10/100 in their *binary* format (fixed-length records; the pickled "python version" is
  never read, since unpickling a file runs code): `read_cifar`.
- Image-folder trees, one folder per class (any format Pillow reads): `read_image_folder`.
- `download(url, dest, md5)`: fetched to a temporary file, checked, then moved into place, so a
  broken or tampered download never sits where a reader would take it for the real file.

Every problem raises `FormatError` naming the file and what was expected. No torch here.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

import numpy as np


class FormatError(ValueError):
    """A dataset file that is missing, truncated or not in the expected format."""


IDX_UBYTE = 0x08  # the only IDX element type the image datasets use


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (`.gz` is decompressed) as a uint8 array of the shape its header gives."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise FormatError(f"{path}: not an IDX file (it must start with two zero bytes)")
    if data[2] != IDX_UBYTE:
        raise FormatError(f"{path}: IDX element type 0x{data[2]:02x}; expected 0x08 (ubyte)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise FormatError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise FormatError(f"{path}: {len(data)} bytes; its header {dims} needs {expected}")
    # a writable copy: torch warns on (and must not write to) read-only buffers
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


CIFAR_SIDE = 32
CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE


def read_cifar(
    path: str | Path, label_bytes: int, label_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR binary file: records of `label_bytes` label bytes then 3072 pixel bytes (the
    red, green and blue planes of a 32x32 image). Returns uint8 images (N, 3, 32, 32) and the
    labels at `label_index` (CIFAR-100 has coarse, then fine)."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc})") from None
    record = label_bytes + CIFAR_PIXELS
    if raw.size == 0 or raw.size % record:
        raise FormatError(f"{path}: {raw.size} bytes is not a whole number of {record}-byte "
                          "CIFAR records (is it the binary version?)")  # fmt: skip
    rows = raw.reshape(-1, record)
    images = rows[:, label_bytes:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return np.ascontiguousarray(images), rows[:, label_index].astype(np.int64)


WIDE_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def image_classes(root: str | Path) -> list[str]:
    """The class names of an image-folder tree: its subfolders, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"{root}: not a folder of class folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FormatError(f"{root}: no class folders in it (expected {root}/<class>/<image>)")
    return classes


def read_image_folder(
    root: str | Path, classes: list[str], size: tuple[int, int] | None, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Every image under `root/<class>/` as uint8 (N, C, H, W) with its class index. `mode` is
    Pillow's ("L" grey, "RGB"); `size` (height, width) resizes, else all images must agree."""
    from PIL import Image, UnidentifiedImageError

    unreadable = (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError)

    root = Path(root)
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if (
            folder.is_dir()) else []  # fmt: skip
        for file in files:
            try:
                with Image.open(file) as image:
                    if image.mode in WIDE_MODES:  # convert() would clip, not rescale
                        raise FormatError(f"{file}: {image.mode} pixels (16-bit or float); "
                                          "expected 8-bit images (convert them first)")  # fmt: skip
                    image = image.convert(mode)
                    if size is not None and image.size != (size[1], size[0]):
                        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    pixels = np.asarray(image, dtype=np.uint8)
            except unreadable as exc:
                raise FormatError(f"{file}: not a readable image ({exc})") from None
            if images and pixels.shape != images[0].shape:
                raise FormatError(f"{file}: {pixels.shape[1]}x{pixels.shape[0]} pixels, unlike "
                                  f"the first image ({images[0].shape[1]}x{images[0].shape[0]});"
                                  " set task.options.size: [height, width]")  # fmt: skip
            images.append(pixels)
            labels.append(label)
    if not images:
        raise FormatError(f"{root}: no images in its class folders ({', '.join(classes)})")
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64)


def checksum(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str) -> Path:
    """`url` saved as `dest` once its MD5 (what dataset authors publish) matches; an existing
    `dest` with the right checksum is kept. Raises FormatError on a mismatch or network error."""
    if dest.exists() and checksum(dest, "md5") == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        got = checksum(partial, "md5")
        if got != md5:
            raise FormatError(f"{url}: downloaded file has MD5 {got}, expected {md5}")
        os.replace(partial, dest)
    except (OSError, http.client.HTTPException) as exc:  # IncompleteRead is not an OSError
        raise FormatError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
    finally:
        partial.unlink(missing_ok=True)
    return dest


def extract(archive: Path, members: list[str], dest: Path) -> None:
    """Only the named regular files of a tar archive, written under `dest` by their base name
    (never a path the archive chooses); each appears under its name only once complete, so an
    interrupted extraction is redone, not mistaken for a finished one."""
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / f".extract.{os.getpid()}.part"
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in members:
                    source = tar.extractfile(member)
                    with source, open(partial, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    os.replace(partial, dest / name)
    except (OSError, EOFError, tarfile.TarError) as exc:  # EOFError: a truncated .gz
        raise FormatError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from None
    finally:
        partial.unlink(missing_ok=True)
