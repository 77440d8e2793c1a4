"""Shipped models as plain arrays: ``<name>.npz`` (read with ``allow_pickle=False``) and a JSON card."""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np


def load_artifact(name: str, path: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arrays and the card of ``<path>.npz`` / ``<path>.json``; by default the model ``name`` shipped
    in ``detectors/models/``. Never unpickles anything."""
    npz: Traversable
    card: Traversable
    if path is None:
        base = resources.files("detectors").joinpath("models")
        npz, card = base.joinpath(name + ".npz"), base.joinpath(name + ".json")
    else:
        p = Path(path).with_suffix("")
        npz, card = p.with_suffix(".npz"), p.with_suffix(".json")
    with npz.open("rb") as f, np.load(f, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(card.read_text(encoding="utf-8"))
