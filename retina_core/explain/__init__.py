"""Grad-CAM explanations that can be checked: maps, fusion maps, overlays, pointing game, ROAD."""

from retina_core.explain.cam import CamMethod, CamResult, cam_maps, compute_cams
from retina_core.explain.fusion import fusion_cams
from retina_core.explain.overlay import outline, overlay, save_png, side_by_side
from retina_core.explain.pointing import (
    PointingRecord,
    PointingSummary,
    default_tolerance_px,
    energy_pointing_game,
    pointing_game_hit,
    random_map_baseline,
    score_pointing,
    smooth_random_maps,
    summarise_pointing,
)
from retina_core.explain.road import RoadComparison, RoadScores, road_scores

__all__ = [
    "CamMethod",
    "CamResult",
    "PointingRecord",
    "PointingSummary",
    "RoadComparison",
    "RoadScores",
    "cam_maps",
    "compute_cams",
    "default_tolerance_px",
    "energy_pointing_game",
    "fusion_cams",
    "outline",
    "overlay",
    "pointing_game_hit",
    "random_map_baseline",
    "road_scores",
    "save_png",
    "score_pointing",
    "side_by_side",
    "smooth_random_maps",
    "summarise_pointing",
]
