"""Polygon helpers the toy detection and segmentation sets draw their shapes with."""
import cv2
import numpy as np


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Vertices (n, 2) turned by ``angle`` radians about the origin."""
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def fill_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask of the pixels inside ``points`` (sub-pixel vertex precision)."""
    mask = np.zeros((height, width), np.uint8)
    shift = 4  # vertices in 1/16 pixel
    cv2.fillPoly(mask, [np.round(points * (1 << shift)).astype(np.int32)], 1,
                 lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)
