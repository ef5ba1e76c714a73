"""BlazePose on a video: MediaPipe's pose detector and 3D landmark models (TFLite, run by
ai-edge-litert) with MediaPipe Pose's own pipeline, for up to `max_people` people.

Per frame (as mediapipe/modules/pose_detection and pose_landmark do for one person):

1. Detection: the frame letterboxed to 224 x 224, RGB in [-1, 1]; 2254 SSD anchors (strides 8,
   16, 32, 32, 32, fixed size, two per cell and layer); boxes and 4 keypoints decoded from
   the raw outputs (scale 224), scores through a sigmoid (clipped at +-100), threshold 0.5,
   weighted non-maximum suppression at IoU 0.3.
2. Region of interest: centred on keypoint 0 (the hip centre), side 2 x |keypoint 1 - keypoint
   0| (keypoint 1 encodes the body's scale and direction), rotated so that the body points
   up (target angle 90 degrees), squared on its long side and scaled by 1.25.
3. Landmarks: the rotated region warped to 256 x 256 RGB in [0, 1]; 39 points (x, y, z,
   visibility, presence), the first 33 BlazePose's, projected back to the image; 39 world
   points in metres, centred between the hips, rotated back by the region's angle; the pose
   flag (presence probability) below 0.5 loses the person.
4. Tracking: the next frame's region comes from this frame's landmarks 33 and 34 (the same
   alignment as step 2). Unlike MediaPipe Pose (one person, detection only when tracking is
   lost), the detector runs on every frame while fewer than `max_people` are tracked: a
   detection whose hip centre falls inside a tracked person's torso is that person; the
   others start new tracks in free body slots.
   Two tracks that converge on the same person (their landmarks within 5% of the region's
   size) are merged into the older.

A body keeps its slot (0 .. max_people - 1) from the frame it is found until it is lost, so
identities are stable while tracking holds.
"""

from __future__ import annotations

import dataclasses
import math
from importlib import resources

import numpy as np

DETECTION_SIZE = 224
LANDMARK_SIZE = 256
NUM_LANDMARKS = 33  # BlazePose's body landmarks; the model's points 33, 34 are for alignment
LANDMARK_MODELS = ("full", "lite")


def _interpreter(name: str, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ValueError(
            "pose extraction needs the ai-edge-litert and opencv-python-headless packages: pip install 'skelang[video]'"
        ) from None
    path = resources.files("skelang.video") / "models" / f"{name}.tflite"
    interpreter = Interpreter(model_path=str(path), num_threads=max(1, threads))
    interpreter.allocate_tensors()
    return interpreter


def ssd_anchors() -> np.ndarray:
    """(2254, 2) anchor centres (x, y) in [0, 1] of the pose detector (MediaPipe's
    SsdAnchorsCalculator options for pose_detection: 5 layers, strides 8, 16, 32, 32, 32, one
    aspect ratio plus the interpolated scale, fixed anchor size, offset 0.5; layers of equal
    stride share their cells)."""
    strides = [8, 16, 32, 32, 32]
    anchors = []
    layer = 0
    while layer < len(strides):
        count = 0
        stride = strides[layer]
        while layer < len(strides) and strides[layer] == stride:
            count += 2  # aspect ratio 1.0 and the interpolated scale
            layer += 1
        cells = math.ceil(DETECTION_SIZE / stride)
        for row in range(cells):
            for column in range(cells):
                anchors.extend([((column + 0.5) / cells, (row + 0.5) / cells)] * count)
    return np.asarray(anchors, dtype=np.float32)


@dataclasses.dataclass
class Detection:
    """A person found by the detector: score, box (x0, y0, x1, y1) and 4 keypoints (4, 2), in
    image pixels."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray


def decode_detections(
    boxes: np.ndarray, scores: np.ndarray, anchors: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (n,), boxes (n, 4) x0 y0 x1 y1, keypoints (n, 4, 2)) in [0, 1] of the letterboxed
    input, from the detector's raw (2254, 12) boxes and (2254,) scores."""
    scores = 1 / (1 + np.exp(-np.clip(scores.astype(np.float64), -100, 100)))
    keep = scores >= threshold
    raw, anchor, scores = boxes[keep], anchors[keep], scores[keep]
    centre = raw[:, 0:2] / DETECTION_SIZE + anchor
    size = raw[:, 2:4] / DETECTION_SIZE
    box = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    keypoints = raw[:, 4:12].reshape(-1, 4, 2) / DETECTION_SIZE + anchor[:, None]
    return scores, box, keypoints


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    intersection = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return intersection / np.maximum(area + areas - intersection, 1e-9)


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, threshold: float = 0.3
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression: highest score first, each kept detection
    the score-weighted mean of the boxes and keypoints overlapping it above `threshold`."""
    order = np.argsort(-scores)
    remaining = list(order)
    kept = []
    while remaining:
        best = remaining[0]
        overlaps = _iou(boxes[best], boxes[remaining]) > threshold
        group = [remaining[i] for i in np.flatnonzero(overlaps)]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        points = (keypoints[group] * weights[:, :, None]).sum(0) / weights.sum()
        kept.append((float(scores[best]), box, points))
        remaining = [remaining[i] for i in np.flatnonzero(~overlaps)]
    return kept


@dataclasses.dataclass
class Region:
    """A rotated square region in image pixels: centre (x, y), side, rotation (radians)."""

    x: float
    y: float
    size: float
    rotation: float

    @staticmethod
    def from_points(start: np.ndarray, end: np.ndarray, scale: float = 1.25) -> Region:
        """MediaPipe's AlignmentPointsRectsCalculator (target angle 90 degrees) then
        RectTransformationCalculator (square long side, x `scale`): centred on `start`, side
        2 |end - start| x scale, rotated so that start -> end points up."""
        dx, dy = float(end[0] - start[0]), float(end[1] - start[1])
        rotation = math.pi / 2 - math.atan2(-dy, dx)
        rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
        return Region(float(start[0]), float(start[1]), 2 * math.hypot(dx, dy) * scale, rotation)

    def to_crop(self, side: int) -> np.ndarray:
        """(2, 3) affine map from image pixels to a `side` x `side` crop of the region."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        scale = side / self.size
        # crop = scale * R(-rotation) (p - centre) + side / 2
        matrix = np.array([[cos, sin], [-sin, cos]]) * scale
        offset = side / 2 - matrix @ np.array([self.x, self.y])
        return np.concatenate([matrix, offset[:, None]], axis=1).astype(np.float64)

    def bounds(self) -> np.ndarray:
        half = self.size / 2
        return np.array([self.x - half, self.y - half, self.x + half, self.y + half])


@dataclasses.dataclass
class PoseFrame:
    """One person in one frame: image landmarks (33, 3: x, y in pixels, visibility in [0, 1]),
    world landmarks (33, 3) in metres (x right, y down, z away from the camera, origin between
    the hips), the pose flag, and the region the next frame starts from."""

    image: np.ndarray
    world: np.ndarray
    presence: float
    next_region: Region


class BlazePose:
    """MediaPipe's detector and BlazePose landmark model (`landmark_model` "full" or "lite")
    on RGB frames (H, W, 3) uint8; see the module's documentation."""

    def __init__(
        self,
        landmark_model: str = "full",
        threads: int = 1,
        detection_threshold: float = 0.5,
        presence_threshold: float = 0.5,
    ):
        if landmark_model not in LANDMARK_MODELS:
            raise ValueError(f"landmark model must be one of {LANDMARK_MODELS}, got {landmark_model!r}")
        import cv2  # noqa: F401 (a clear error now rather than at the first frame)

        self.detector = _interpreter("pose_detection", threads)
        self.landmarker = _interpreter(f"pose_landmark_{landmark_model}", threads)
        self.anchors = ssd_anchors()
        self.detection_threshold, self.presence_threshold = detection_threshold, presence_threshold
        outputs = self.detector.get_output_details()
        self._boxes = next(o["index"] for o in outputs if o["shape"][-1] == 12)
        self._scores = next(o["index"] for o in outputs if o["shape"][-1] == 1)
        outputs = {tuple(o["shape"]): o["index"] for o in self.landmarker.get_output_details()}
        self._landmarks, self._flag, self._world = outputs[(1, 195)], outputs[(1, 1)], outputs[(1, 117)]

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """The people in an RGB frame, best first (weighted NMS), in image pixels."""
        import cv2

        height, width = frame.shape[:2]
        scale = DETECTION_SIZE / max(height, width)
        resized = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.full((DETECTION_SIZE, DETECTION_SIZE, 3), -1.0, dtype=np.float32)  # black letterbox bars
        top, left = (DETECTION_SIZE - resized.shape[0]) // 2, (DETECTION_SIZE - resized.shape[1]) // 2
        canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized.astype(np.float32) / 127.5 - 1
        self.detector.set_tensor(self.detector.get_input_details()[0]["index"], canvas[None])
        self.detector.invoke()
        boxes = self.detector.get_tensor(self._boxes)[0]
        scores = self.detector.get_tensor(self._scores)[0, :, 0]
        decoded = decode_detections(boxes, scores, self.anchors, self.detection_threshold)
        offset = np.array([left, top])

        def to_pixels(xy: np.ndarray) -> np.ndarray:  # letterboxed [0, 1] -> image pixels
            return (xy * DETECTION_SIZE - offset) / scale

        found = []
        for score, box, points in weighted_nms(*decoded):
            found.append(Detection(score, to_pixels(box.reshape(2, 2)).reshape(4), to_pixels(points)))
        return found

    def landmarks(self, frame: np.ndarray, region: Region) -> PoseFrame | None:
        """The person in `region` of an RGB frame, or None when the pose flag says nobody is
        there."""
        import cv2

        matrix = region.to_crop(LANDMARK_SIZE)
        crop = cv2.warpAffine(
            frame,
            matrix,
            (LANDMARK_SIZE, LANDMARK_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        self.landmarker.set_tensor(
            self.landmarker.get_input_details()[0]["index"], (crop.astype(np.float32) / 255)[None]
        )
        self.landmarker.invoke()
        presence = float(self.landmarker.get_tensor(self._flag)[0, 0])
        if presence < self.presence_threshold:
            return None
        raw = self.landmarker.get_tensor(self._landmarks)[0].reshape(39, 5)
        inverse = cv2.invertAffineTransform(matrix)
        points = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]  # crop pixels -> image pixels
        visibility = 1 / (1 + np.exp(-raw[:, 3]))
        world = self.landmarker.get_tensor(self._world)[0].reshape(39, 3)
        cos, sin = math.cos(region.rotation), math.sin(region.rotation)
        world = np.stack(
            [cos * world[:, 0] - sin * world[:, 1], sin * world[:, 0] + cos * world[:, 1], world[:, 2]], axis=1
        )
        image = np.concatenate([points[:NUM_LANDMARKS], visibility[:NUM_LANDMARKS, None]], axis=1)
        return PoseFrame(
            image.astype(np.float32),
            world[:NUM_LANDMARKS].astype(np.float32),
            presence,
            Region.from_points(points[33], points[34]),
        )
