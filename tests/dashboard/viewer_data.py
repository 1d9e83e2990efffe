"""Decoding the film viewer's data as the browser does (dashboard/assets/film_viewer.js, ``parse``)."""

from __future__ import annotations

import json

import numpy as np


def read_payload(payload: bytes) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """(header, display pixels, heatmap grid as uint8 or None) of one viewer payload."""
    length = int.from_bytes(payload[:4], "little")
    header = json.loads(payload[4 : 4 + length])
    dtype = np.dtype("<u2") if header["bits"] == 16 else np.dtype(np.uint8)
    count = header["width"] * header["height"]
    pixels = np.frombuffer(payload, dtype, count, 4 + length)
    heat = None
    if header["heat"] is not None:
        grid = header["heat"]
        at = 4 + length + count * dtype.itemsize
        heat = np.frombuffer(payload, np.uint8, grid["width"] * grid["height"], at)
        heat = heat.reshape(grid["height"], grid["width"])
    return header, pixels.reshape(header["height"], header["width"]), heat


def shown_viewer(at) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """The Predict page's viewer data in an AppTest run (the component is an unknown element)."""
    (element,) = [e for e in at.get("bidi_component") if e.key == "predict_viewer"]
    return read_payload(element.proto.bytes)
