"""Synthetic APTOS-, Kermany- and pairs-style data, so the whole pipeline runs without downloads.

``write_synthetic`` writes the real on-disk layouts; ``render_fundus`` and ``render_oct`` draw
single images with their lesion masks. How hard the data is lives in ``difficulty.py``.
"""

from retina_core.data.synthetic.fundus import render_fundus
from retina_core.data.synthetic.oct import OctPatient, render_oct
from retina_core.data.synthetic.shift import CameraShift, Shift, apply_camera
from retina_core.data.synthetic.writer import SynthSpec, SynthSummary, write_synthetic

__all__ = [
    "CameraShift",
    "OctPatient",
    "Shift",
    "SynthSpec",
    "SynthSummary",
    "apply_camera",
    "render_fundus",
    "render_oct",
    "write_synthetic",
]
