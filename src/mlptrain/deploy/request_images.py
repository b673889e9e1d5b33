"""What a /predict request body holds, as uint8 images of the model's size, decoded the
way `mlp-predict` reads files (grey, resized, light backgrounds inverted for the
built-in datasets). Each way a body can be wrong is a BadInput naming it, with the
HTTP status to answer: 400 (malformed), 413 (too large, too many images), 415 (a
content type that is not taken).

Bodies taken:
  multipart/form-data       image files, in any field (any format Pillow reads)
  application/json          {"images": [IMAGE, ...]}, each IMAGE a base64 string of an
                            image file or an H x W array of pixels 0-255
  application/octet-stream  raw uint8 pixels, N x H x W, row by row (the cheapest)
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence

import numpy as np

from mlptrain.deploy.prediction import load_image, read_failure

CONTENT_TYPES = ("multipart/form-data", "application/json", "application/octet-stream")


class BadInput(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def image_from_bytes(data: bytes, what: str, size: tuple[int, int], invert: bool | None):
    if not data:
        raise BadInput(400, f"{what} is empty")
    try:
        return load_image(io.BytesIO(data), invert, size)
    except Exception as exc:  # Pillow raises many types for undecodable data
        reason = read_failure(exc)
        if "cannot identify image file" in reason:
            reason = "not a known image format"
        raise BadInput(400, f"{what} is not an image Pillow can read ({reason})") from None


def pixel_array(values, what: str, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise BadInput(400, f"{what} is not an array of numbers") from None
    if array.shape == (height * width,):
        array = array.reshape(height, width)
    if array.shape != (height, width):
        raise BadInput(
            400, f"{what} has shape {list(array.shape)}; the model takes {height} x {width} pixels"
        )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise BadInput(400, f"{what} has values outside 0-255")
    if not np.array_equal(array, np.round(array)):
        raise BadInput(400, f"{what} has values that are not whole numbers (pixels are 0-255)")
    return array.astype(np.uint8)


def from_json(body: bytes, size: tuple[int, int], invert: bool | None) -> list[np.ndarray]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise BadInput(400, 'the JSON body must be an object {"images": [...]}')
    images = []
    for number, item in enumerate(document["images"], 1):
        what = f"image {number}"
        if isinstance(item, str):
            try:
                data = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise BadInput(400, f"{what} is a string but not base64") from None
            images.append(image_from_bytes(data, what, size, invert))
        elif isinstance(item, list):
            images.append(pixel_array(item, what, size))
        else:
            raise BadInput(400, f"{what} must be a base64 string or an array of pixels")
    return images


def from_raw(body: bytes, size: tuple[int, int]) -> list[np.ndarray]:
    height, width = size
    if len(body) % (height * width):
        raise BadInput(
            400, f"the raw body has {len(body)} bytes, not a multiple of {height} x {width} pixels"
        )
    pixels = np.frombuffer(body, dtype=np.uint8).reshape(-1, height, width)
    return list(pixels)


def from_files(files: Sequence[tuple[str, bytes]], size, invert) -> list[np.ndarray]:
    return [image_from_bytes(data, f"file {name!r}", size, invert) for name, data in files]


def stack(images: list[np.ndarray], limit: int) -> np.ndarray:
    if not images:
        raise BadInput(400, "the request holds no image")
    if len(images) > limit:
        raise BadInput(413, f"the request holds {len(images)} images; at most {limit} are taken")
    return np.stack(images)
