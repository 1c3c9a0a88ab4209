"""Helpers that write tiny fixture files (images, 16-bit depth PNGs, .npy) for the loader tests."""

import os

import numpy as np
import pytest
from PIL import Image


def write_image(path, value=128, size=(8, 8), mode="RGB"):
    """Write a constant image (value may be an int or an HxW(xC) array) and return its path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h, w = size
    if np.isscalar(value):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        dtype = np.uint16 if mode == "I;16" else np.uint8
        value = np.full(shape, value, dtype=dtype)
    arr = np.asarray(value)
    if mode == "I;16":
        Image.fromarray(arr.astype(np.uint16)).save(path)
    else:
        Image.fromarray(arr.astype(np.uint8), mode=None).save(path)
    return path


def write_text(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def img():
    return write_image


@pytest.fixture
def text():
    return write_text
