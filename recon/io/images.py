"""Reading and writing single images with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.io.atomic import atomic_path


MAX_PIXELS = 1 << 28
"""Images whose header claims more pixels than this (268 megapixels, 16k x 16k) are refused before
decoding: a corrupt header or a decompression bomb, never a frame of a capture."""


def read_pixels(path: str | os.PathLike, mode: str = "RGB", what: str = "image") -> np.ndarray:
    """Decode an image file into PIL ``mode`` (``RGB`` -> ``uint8 [H, W, 3]``, ``RGBA`` -> ``[H, W, 4]``,
    ``L`` -> ``[H, W]``); a missing, corrupt or truncated file is an InputError naming it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file does not exist", path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise InputError(f"{what} header says {w}x{h} pixels, more than recon decodes ({MAX_PIXELS / 1e6:.0f} "
                                 "megapixels); corrupt, or resize it first", path, "size")
            im.load()
            arr = np.asarray(im.convert(mode))
    except Image.DecompressionBombError as e:
        raise InputError(f"{what} is too large to decode safely ({e})", path, "size") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot decode {what} (corrupt or truncated?): {e}", path) from None
    except MemoryError:  # the size was checked above: a corrupt chunk length asked for the memory
        raise InputError(f"cannot decode {what} (corrupt: a chunk claims more bytes than memory holds)", path) from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` RGB (alpha dropped, grey expanded)."""
    return read_pixels(path, "RGB")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask image as ``bool [H, W]`` (any channel > 127 counts as foreground)."""
    return read_pixels(path, "L", "mask image") > 127


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``uint8 [H, W, 3]``, ``[H, W]`` or ``bool [H, W]`` losslessly as PNG, atomically."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8 or bool, got {a.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG", compress_level=1)


def to_uint8(img) -> np.ndarray:
    """Float image in [0, 1] (numpy or torch, any leading shape) -> uint8 numpy, rounded and clipped."""
    try:
        import torch

        if isinstance(img, torch.Tensor):
            img = img.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.clip(np.round(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
