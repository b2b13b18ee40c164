"""`render`: the dashboard's one HTML file, written from the data `collect` saved.

The page is `page.html` with four places filled in one pass: {{title}}, {{css}} (`page.css`), {{js}} (`page.js`)
and {{data}} (data.json, with the shown images as base64 PNG). The three files are package data beside this module.
The script reads the data and draws everything in the browser (charts as inline SVG): no server, no network.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from ...runtime.atomic import write_file
from .data import IMAGES, INDEX, data_folder, load

ASSETS = resources.files(__package__)                     # holds page.html, page.css and page.js
_PLACES = re.compile(r"\{\{(title|css|js|data)\}\}")


def png(pixels: Tensor) -> bytes:
    """A PNG file of a uint8 image (channels, H, W) with 1 (grey) or 3 (RGB) channels, written by Pillow."""
    channels, height, width = pixels.shape
    if channels not in (1, 3):
        raise ValueError(f"a PNG thumbnail needs 1 or 3 channels, got {channels}")
    if pixels.dtype != torch.uint8:
        raise ValueError(f"a PNG thumbnail needs uint8 pixels (0 to 255), got {pixels.dtype}")
    from PIL import Image

    array = pixels.detach().cpu().permute(1, 2, 0).contiguous().numpy()                # (H, W, channels)
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if channels == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def render(folder: str | os.PathLike) -> Path:
    """Write `folder`/index.html, the self-contained dashboard, from the data `collect` saved; returns its path."""
    folder = data_folder(Path(folder))
    data = load(folder)
    if data["kind"] == "images":
        data["images"] = _image_sources(folder / IMAGES)
    # "<" only occurs inside JSON strings; escaped, no "</script>" or "<!--" in the data can end the script element
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    title = data["title"].replace("&", "&amp;").replace("<", "&lt;")
    parts = {"title": title, "css": _asset("page.css"), "js": _asset("page.js"), "data": payload}
    # one pass: a {{...}} inside the title or the data is text, never a place to fill
    page = _PLACES.sub(lambda m: parts[m.group(1)], _asset("page.html"))
    return write_file(folder / INDEX, lambda f: Path(f).write_text(page, encoding="utf-8"))


def _asset(name: str) -> str:
    """The text of one of the page's files (package data)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def _image_sources(path: Path) -> dict[str, str]:
    """The saved images as data URLs of PNG files, by input index."""
    from safetensors.torch import load_file

    saved = load_file(path)
    return {str(int(i)): "data:image/png;base64," + base64.b64encode(png(image)).decode()
            for i, image in zip(saved["ids"], saved["images"], strict=True)}
