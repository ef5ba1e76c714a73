"""A built-in synthetic skeleton dataset: procedural kinematics of everyday actions.

Every sample is generated on the fly from (seed, index), never read from a file. Forward
kinematics on the NTU RGB+D 25-joint layout: a rest skeleton scaled to the performer, joint
rotations per frame from action-specific curves of the action's phase u in [0, 1], ground
contact (the supporting foot stays on the floor and in place), placement in the room, a
camera view and sensor noise.

Coordinates are the Kinect camera's, in metres: y up, z along the camera's line of sight, and
(x, y, z) right-handed, so a performer facing the camera has their right side at larger x
(as in the NTU recordings). Performers stand about 3 m from the camera, facing it (-z), turned
by up to 45 degrees.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable

import numpy as np
import torch

from skelang.data.sequence import Sequence

# NTU RGB+D joints, 0-based.
SPINE_BASE, SPINE_MID, NECK, HEAD = 0, 1, 2, 3
L_SHOULDER, L_ELBOW, L_WRIST, L_HAND = 4, 5, 6, 7
R_SHOULDER, R_ELBOW, R_WRIST, R_HAND = 8, 9, 10, 11
L_HIP, L_KNEE, L_ANKLE, L_FOOT = 12, 13, 14, 15
R_HIP, R_KNEE, R_ANKLE, R_FOOT = 16, 17, 18, 19
SPINE_SHOULDER, L_HAND_TIP, L_THUMB, R_HAND_TIP, R_THUMB = 20, 21, 22, 23, 24
NUM_JOINTS = 25

# Kinematic tree of the generator, the Kinect v2 hierarchy rooted at the spine base: parent of
# each joint, -1 for the root. (The ntu25 layout's bone graph is rooted elsewhere and links the
# hand joints differently; the hand is rigid here, so its bones keep their length too.)
_PARENTS = (-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 6, 11, 10)

_LEFT_TWIN = {
    R_SHOULDER: L_SHOULDER,
    R_ELBOW: L_ELBOW,
    R_WRIST: L_WRIST,
    R_HAND: L_HAND,
    R_HIP: L_HIP,
    R_KNEE: L_KNEE,
    R_ANKLE: L_ANKLE,
    R_FOOT: L_FOOT,
    R_HAND_TIP: L_HAND_TIP,
    R_THUMB: L_THUMB,
}

# Rest pose (standing, arms hanging, palms facing the thighs) of a 1.7 m performer: offset of
# each joint from its parent, in metres, in the body frame (x to the performer's right, y up,
# the performer facing -z). Left joints mirror these.
_RIGHT_AND_CENTRE_OFFSETS = {
    SPINE_MID: (0.0, 0.26, 0.0),
    SPINE_SHOULDER: (0.0, 0.19, 0.0),
    NECK: (0.0, 0.06, 0.0),
    HEAD: (0.0, 0.12, -0.01),
    R_SHOULDER: (0.16, -0.02, 0.0),
    R_ELBOW: (0.0, -0.28, 0.0),
    R_WRIST: (0.0, -0.25, 0.0),
    R_HAND: (0.0, -0.08, 0.0),
    R_HAND_TIP: (0.0, -0.07, 0.0),
    R_THUMB: (0.0, -0.04, -0.04),
    R_HIP: (0.085, -0.05, 0.0),
    R_KNEE: (0.0, -0.42, 0.0),
    R_ANKLE: (0.0, -0.40, 0.0),
    R_FOOT: (0.0, -0.05, -0.10),
}
_ARM_JOINTS = (R_ELBOW, R_WRIST, R_HAND, R_HAND_TIP, R_THUMB)
_LEG_JOINTS = (R_KNEE, R_ANKLE, R_FOOT)


def _rest_offsets(body_scale: float, arm_scale: float, leg_scale: float) -> np.ndarray:
    """(V, 3) bone offsets from each joint's parent for one performer; the root's is zero."""
    offsets = np.zeros((NUM_JOINTS, 3))
    for joint, offset in _RIGHT_AND_CENTRE_OFFSETS.items():
        scale = body_scale * (arm_scale if joint in _ARM_JOINTS else leg_scale if joint in _LEG_JOINTS else 1.0)
        offsets[joint] = np.multiply(offset, scale)
        if joint in _LEFT_TWIN:
            offsets[_LEFT_TWIN[joint]] = offsets[joint] * (-1.0, 1.0, 1.0)
    return offsets


@dataclasses.dataclass
class Motion:
    """One body's movement over T frames, in its own frame, before it is placed in the room.

    rotation: (T, V, 3) degrees. rotation[:, j] turns the bones below joint j in its parent's
              frame: about the body's x axis (to the performer's right), then z (backward),
              then y (up). Positive x swings a hanging limb forward (shoulder or hip flexion)
              and the trunk backward; positive z swings a hanging limb to the performer's
              right; positive y turns to the performer's left.
    turn:     (T,) degrees the whole body turns to its left about the vertical axis.
    lift:     (T,) metres the body is off the floor (the flight of a jump).
    """

    rotation: np.ndarray
    turn: np.ndarray
    lift: np.ndarray

    @classmethod
    def standing(cls, num_frames: int) -> Motion:
        """No movement, in float32 like the output (its trigonometry is much faster)."""
        return cls(
            np.zeros((num_frames, NUM_JOINTS, 3), np.float32),
            np.zeros(num_frames, np.float32),
            np.zeros(num_frames, np.float32),
        )

    def rotate(self, joint: int, x=0.0, y=0.0, z=0.0) -> None:
        """Adds rotations (degrees: numbers or (T,) curves) at `joint`."""
        self.rotation[:, joint, 0] += x
        self.rotation[:, joint, 1] += y
        self.rotation[:, joint, 2] += z

    def rotate_both(self, right_joint: int, x=0.0, y=0.0, z=0.0) -> None:
        """Adds a rotation at a right joint and its mirror image at the left twin."""
        self.rotate(right_joint, x, y, z)
        self.rotate(_LEFT_TWIN[right_joint], x, -np.asarray(y), -np.asarray(z))


@dataclasses.dataclass(frozen=True)
class Style:
    """How one performer carries out an action, drawn per sample.

    amplitude: scale of the movement, 0.8 to 1.2.
    tempo:     0 to 1, how many repetitions a repeated movement fits in its time.
    phase:     radians, where oscillations start.
    side:      +1 or -1, the way a turn or a side step goes.
    """

    amplitude: float
    tempo: float
    phase: float
    side: int


# Curves of the phase u (T,) in [0, 1], raised-cosine shaped so that movements start and stop smoothly.


def _ramp(u: np.ndarray, start: float, end: float) -> np.ndarray:
    """Raised-cosine step from 0 (before start) to 1 (after end)."""
    s = np.clip((u - start) / (end - start), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * s)


def _bump(u: np.ndarray, start: float, end: float) -> np.ndarray:
    """Raised-cosine pulse: 0 outside [start, end], 1 at its middle."""
    return _pulses(u, 1, start, end)


def _pulses(u: np.ndarray, count: int, start: float, end: float) -> np.ndarray:
    """`count` raised-cosine pulses side by side over [start, end]."""
    s = np.clip((u - start) / (end - start), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(2 * np.pi * count * s)


def _plateau(u: np.ndarray, start: float, end: float, edge: float) -> np.ndarray:
    """1 inside [start + edge, end - edge], raised-cosine edges down to 0 at start and end."""
    return _ramp(u, start, start + edge) * (1.0 - _ramp(u, end - edge, end))


def _step_legs(motion: Motion, u: np.ndarray, cycles: float, phase: float, height: float) -> np.ndarray:
    """Lifts the knees alternately, left first; returns the (T,) gait cycle in [-1, 1]."""
    cycle = _plateau(u, 0.05, 0.95, 0.15) * np.sin(2 * np.pi * cycles * u + phase)
    for hip, knee, side in ((L_HIP, L_KNEE, 1), (R_HIP, R_KNEE, -1)):
        lift = np.maximum(side * cycle, 0)
        motion.rotate(hip, x=45 * height * lift)
        motion.rotate(knee, x=-80 * height * lift)
    return cycle


# The actions. Each maps the phase u (T,) and a style to a Motion.


def _wave(u, style):
    m = Motion.standing(len(u))
    raised = _plateau(u, 0.05, 0.95, 0.2)
    swing = np.sin(2 * np.pi * (2 + 2 * style.tempo) * u + style.phase)
    m.rotate(R_SHOULDER, x=15 * raised, z=95 * raised)
    m.rotate(R_ELBOW, z=(60 + 25 * style.amplitude * swing) * raised)
    return m


def _clap(u, style):
    m = Motion.standing(len(u))
    reach = _plateau(u, 0.05, 0.95, 0.2)
    together = _pulses(u, 3 + round(3 * style.tempo), 0.2, 0.8)
    m.rotate_both(R_SHOULDER, x=65 * reach, y=(38 * together - 20 * style.amplitude) * reach)
    m.rotate_both(R_ELBOW, x=35 * reach)
    return m


def _kick(u, style):
    m = Motion.standing(len(u))
    leg = _bump(u, 0.15, 0.8)
    hip = 75 * style.amplitude * leg
    # The knee stays bent, the foot under it, until it snaps straight at the top of the swing.
    m.rotate(R_HIP, x=hip)
    m.rotate(R_KNEE, x=-(hip + 20 * leg) * (1 - _bump(u, 0.3, 0.65)))
    m.rotate(R_ANKLE, x=-30 * leg)
    m.rotate(SPINE_BASE, x=12 * leg)
    m.rotate_both(R_SHOULDER, z=20 * leg)
    return m


def _squat(u, style):
    m = Motion.standing(len(u))
    depth = style.amplitude * _pulses(u, 1 + round(style.tempo), 0.1, 0.9)
    m.rotate_both(R_HIP, x=85 * depth)
    m.rotate_both(R_KNEE, x=-105 * depth)
    m.rotate(SPINE_BASE, x=-30 * depth)
    m.rotate_both(R_SHOULDER, x=80 * depth)
    return m


def _jump(u, style):
    m = Motion.standing(len(u))
    crouch = _bump(u, 0.1, 0.42) + 0.7 * _bump(u, 0.58, 0.85)
    flight = np.sin(np.pi * np.clip((u - 0.42) / 0.16, 0.0, 1.0))
    m.rotate_both(R_HIP, x=55 * crouch)
    m.rotate_both(R_KNEE, x=-85 * crouch)
    m.rotate_both(R_ANKLE, x=-35 * flight)
    m.rotate(SPINE_BASE, x=-25 * crouch)
    m.rotate_both(R_SHOULDER, x=150 * flight - 40 * crouch)
    m.lift = 0.25 * style.amplitude * flight
    return m


def _punch(u, style):
    m = Motion.standing(len(u))
    guard = _plateau(u, 0.02, 0.98, 0.15)
    hit = _pulses(u, 2 + round(style.tempo), 0.2, 0.85)
    m.rotate_both(R_SHOULDER, x=30 * guard, z=10 * guard)
    m.rotate_both(R_ELBOW, x=110 * guard)
    m.rotate(R_SHOULDER, x=55 * style.amplitude * hit, z=-10 * hit)
    m.rotate(R_ELBOW, x=-105 * hit)
    m.rotate(SPINE_MID, y=15 * style.amplitude * hit)
    return m


def _sit_down(u, style):
    m = Motion.standing(len(u))
    seated = style.amplitude * _ramp(u, 0.15, 0.85)
    lean = _bump(u, 0.15, 0.85)
    m.rotate_both(R_HIP, x=90 * seated)
    m.rotate_both(R_KNEE, x=-90 * seated)
    m.rotate(SPINE_BASE, x=-35 * lean - 5 * seated)
    m.rotate_both(R_SHOULDER, x=35 * lean + 20 * seated)
    m.rotate_both(R_ELBOW, x=40 * seated)
    return m


def _stand_up(u, style):
    return _sit_down(1.0 - u, style)


def _bow(u, style):
    m = Motion.standing(len(u))
    bend = style.amplitude * _plateau(u, 0.1, 0.9, 0.3)
    m.rotate(SPINE_BASE, x=-45 * bend)
    m.rotate(SPINE_MID, x=-10 * bend)
    m.rotate(NECK, x=-10 * bend)
    m.rotate_both(R_SHOULDER, x=50 * bend)
    return m


def _raise_both_arms(u, style):
    m = Motion.standing(len(u))
    raised = _plateau(u, 0.05, 0.95, 0.3)
    m.rotate_both(R_SHOULDER, z=150 * style.amplitude * raised)
    m.rotate_both(R_ELBOW, x=10 * raised)
    return m


def _turn_around(u, style):
    m = Motion.standing(len(u))
    m.turn = style.side * 180 * _ramp(u, 0.1, 0.9)
    _step_legs(m, u, 2 + 2 * style.tempo, style.phase, 0.5 * style.amplitude)
    return m


def _walk_in_place(u, style):
    m = Motion.standing(len(u))
    cycle = _step_legs(m, u, 3 + 2 * style.tempo, style.phase, style.amplitude)
    m.rotate(R_SHOULDER, x=25 * style.amplitude * cycle)
    m.rotate(L_SHOULDER, x=-25 * style.amplitude * cycle)
    m.rotate_both(R_ELBOW, x=20 * np.abs(cycle))
    return m


def _touch_head(u, style):
    m = Motion.standing(len(u))
    reach = _plateau(u, 0.05, 0.95, 0.3)
    taps = _pulses(u, 2 + round(2 * style.tempo), 0.35, 0.65)
    m.rotate(R_SHOULDER, x=10 * reach, z=110 * reach)
    m.rotate(R_ELBOW, z=(127 - 12 * style.amplitude * taps) * reach)
    m.rotate(NECK, x=-8 * reach)
    return m


def _side_step(u, style):
    m = Motion.standing(len(u))
    lead, trail = ((R_HIP, R_KNEE), (L_HIP, L_KNEE))[:: style.side]
    spread = 18 * style.amplitude * style.side
    # The leading leg reaches out, the weight shifts across (both legs tilt together), the
    # trailing leg closes in.
    reach, shift, close = _ramp(u, 0.1, 0.35), _ramp(u, 0.4, 0.65), _ramp(u, 0.65, 0.9)
    lead_lifted, trail_lifted = _bump(u, 0.1, 0.35), _bump(u, 0.65, 0.9)
    m.rotate(lead[0], x=15 * lead_lifted, z=spread * (reach - shift))
    m.rotate(trail[0], x=15 * trail_lifted, z=-spread * (shift - close))
    m.rotate(lead[1], x=-30 * lead_lifted)
    m.rotate(trail[1], x=-30 * trail_lifted)
    m.rotate_both(R_SHOULDER, z=8 * _bump(u, 0.1, 0.9))
    return m


def _throw(u, style):
    m = Motion.standing(len(u))
    wind_up, release, lower = _ramp(u, 0.1, 0.4), _ramp(u, 0.45, 0.6), _ramp(u, 0.65, 0.95)
    swing = (100 * style.amplitude * release - 40 * wind_up) * (1 - lower)
    m.rotate(R_SHOULDER, y=swing, z=100 * wind_up * (1 - lower))
    m.rotate(R_ELBOW, z=90 * wind_up * (1 - release))
    m.rotate(SPINE_MID, y=(45 * release - 20 * wind_up) * (1 - lower))
    m.rotate(L_SHOULDER, x=40 * wind_up * (1 - lower))
    return m


@dataclasses.dataclass(frozen=True)
class SyntheticAction:
    """One class of the synthetic dataset: its name, what the body does, and how."""

    name: str
    description: str
    motion: Callable[[np.ndarray, Style], Motion] = dataclasses.field(repr=False)


SYNTHETIC_ACTIONS: tuple[SyntheticAction, ...] = (
    SyntheticAction(
        "wave", "The right hand is raised above the shoulder and swings side to side several times.", _wave
    ),
    SyntheticAction("clap", "Both arms reach forward and the hands meet in front of the chest several times.", _clap),
    SyntheticAction(
        "kick",
        "The right leg swings forward, the knee first bent then snapping straight, and returns to the floor.",
        _kick,
    ),
    SyntheticAction(
        "squat",
        "The hips and knees bend to lower the body with the arms stretched "
        "forward and straighten again, once or twice.",
        _squat,
    ),
    SyntheticAction(
        "jump",
        "The body crouches, swings the arms up and leaves the floor with both feet, then lands bending the knees.",
        _jump,
    ),
    SyntheticAction(
        "punch",
        "From a guard with both fists raised, the right arm drives straight "
        "forward and pulls back, two or three times.",
        _punch,
    ),
    SyntheticAction(
        "sit down",
        "From standing, the hips and knees bend until the thighs are level, "
        "as if sitting on a chair, and the body stays seated.",
        _sit_down,
    ),
    SyntheticAction(
        "stand up",
        "From a seated pose the body leans forward and rises until it stands upright, sit down played backwards.",
        _stand_up,
    ),
    SyntheticAction("bow", "The upper body bends forward from the waist, pauses and straightens up again.", _bow),
    SyntheticAction(
        "raise both arms", "Both arms are raised sideways above the head, held and lowered again.", _raise_both_arms
    ),
    SyntheticAction("turn around", "The body turns half a circle on the spot with small steps.", _turn_around),
    SyntheticAction(
        "walk in place", "The knees lift alternately while the arms swing, without moving forward.", _walk_in_place
    ),
    SyntheticAction(
        "touch head", "The right hand comes up to the top of the head, pats it and goes back down.", _touch_head
    ),
    SyntheticAction(
        "side step",
        "One leg steps sideways, the weight shifts onto it and the other leg follows, moving the body to the side.",
        _side_step,
    ),
    SyntheticAction(
        "throw",
        "The right arm is drawn back beside the head and whips forward over the shoulder, as in throwing a ball.",
        _throw,
    ),
)


def synthetic_class_names() -> list[str]:
    """Names of the synthetic actions, in label order."""
    return [action.name for action in SYNTHETIC_ACTIONS]


def _action_index(action: int | str) -> int:
    names = synthetic_class_names()
    if isinstance(action, str):
        if action not in names:
            raise ValueError(f"unknown synthetic action {action!r}; known actions: {', '.join(names)}")
        return names.index(action)
    index = operator.index(action)
    if not 0 <= index < len(names):
        raise ValueError(f"synthetic action index {index} out of range 0..{len(names) - 1}")
    return index


def _idle(motion: Motion, t: np.ndarray, rng: np.random.Generator) -> None:
    """Adds what a body does while standing: how it holds its arms, a slow sway, head movement."""
    motion.rotate_both(R_SHOULDER, z=rng.uniform(4, 12))
    motion.rotate_both(R_ELBOW, x=rng.uniform(5, 20))
    cycles = rng.uniform(0.3, 1.0)
    phases = rng.uniform(0, 2 * np.pi, 4)
    sway = [np.sin(2 * np.pi * cycles * t + phase) for phase in phases]
    motion.rotate(SPINE_BASE, x=2 * sway[0], z=2 * sway[1])
    motion.rotate(NECK, x=4 * sway[2], y=6 * sway[3])


def _axis_rotations(degrees, axis: int) -> np.ndarray:
    """(...) angles in degrees -> (..., 3, 3) rotations about the x, y or z axis (0, 1, 2)."""
    radians = np.deg2rad(degrees)
    cos, sin = np.cos(radians), np.sin(radians)
    i, j = ((1, 2), (2, 0), (0, 1))[axis]
    rotations = np.zeros(np.shape(radians) + (3, 3), np.result_type(radians))
    rotations[..., axis, axis] = 1.0
    rotations[..., i, i] = rotations[..., j, j] = cos
    rotations[..., i, j] = -sin
    rotations[..., j, i] = sin
    return rotations


def _joint_rotations(degrees: np.ndarray) -> np.ndarray:
    """(..., 3) angles about x, y, z in degrees -> (..., 3, 3) rotations R_y @ R_z @ R_x,
    multiplied out (the x rotation applies first)."""
    radians = np.deg2rad(degrees)
    (cx, cy, cz), (sx, sy, sz) = np.moveaxis(np.cos(radians), -1, 0), np.moveaxis(np.sin(radians), -1, 0)
    rows = [
        (cy * cz, sy * sx - cy * sz * cx, cy * sz * sx + sy * cx),
        (sz, cz * cx, -cz * sx),
        (-sy * cz, sy * sz * cx + cy * sx, cy * cx - sy * sz * sx),
    ]
    return np.stack([np.stack(row, -1) for row in rows], -2)


def _depth(joint: int) -> int:
    return 0 if _PARENTS[joint] < 0 else 1 + _depth(_PARENTS[joint])


def _fk_level(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Joints at `depth` below the root and the frames they hang from: their parent's, except
    for the hips, which hang from the pelvis (frame NUM_JOINTS, the spine base's position
    without its rotation), so that a rotation at the spine base bends the lower back and
    leaves the legs in place."""
    joints = np.array([joint for joint in range(NUM_JOINTS) if _depth(joint) == depth])
    return joints, np.where(np.isin(joints, (L_HIP, R_HIP)), NUM_JOINTS, np.take(_PARENTS, joints))


# Forward kinematics handles one depth of the tree at a time.
_FK_LEVELS = tuple(_fk_level(depth) for depth in range(1, 1 + max(map(_depth, range(NUM_JOINTS)))))


def _forward_kinematics(rotation: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Joint rotations (T, V, 3) degrees and bone offsets (V, 3) -> positions (T, V, 3),
    the spine base at the origin."""
    # (V + 1, T, 4, 4) rigid transforms: first each joint's own (its rotation, its offset from
    # the parent), then, one tree level at a time, its place in the body frame.
    transforms = np.zeros((NUM_JOINTS + 1, len(rotation), 4, 4), rotation.dtype)
    transforms[:NUM_JOINTS, :, :3, :3] = _joint_rotations(rotation.transpose(1, 0, 2))
    transforms[:NUM_JOINTS, :, :3, 3] = offsets[:, None]
    transforms[..., 3, 3] = 1.0
    transforms[NUM_JOINTS] = np.eye(4)
    for joints, frames in _FK_LEVELS:
        transforms[joints] = transforms[frames] @ transforms[joints]
    return transforms[:NUM_JOINTS, :, :3, 3].transpose(1, 0, 2)


def _ground_contact(positions: np.ndarray, lift: np.ndarray) -> np.ndarray:
    """(T, 3) translation that keeps the supporting foot on the floor (y = 0) and where it
    stands; the lower foot supports, both share the weight when level."""
    feet = positions[:, [L_FOOT, R_FOOT]]
    left_share = 0.5 - 0.5 * np.tanh((feet[:, 0, 1] - feet[:, 1, 1]) / 0.02)
    share = np.stack([left_share, 1.0 - left_share], 1)[..., None]
    support_step = (0.5 * (share[1:] + share[:-1]) * np.diff(feet, axis=0)).sum(1)
    translation = -np.concatenate([np.zeros((1, 3)), np.cumsum(support_step, 0)])
    translation[:, 1] = lift - (share * feet).sum(1)[:, 1]
    return translation


def _body_in_room(motion: Motion, offsets: np.ndarray, yaw: float, spot: np.ndarray) -> np.ndarray:
    """Motion -> (T, V, 3) positions in the room: floor at y = 0, the body turned by `yaw`
    degrees and standing at `spot` (x, z) at frame 0."""
    # The ankles keep the feet level: they undo the hips' and knees' tilt.
    rotation = motion.rotation.copy()
    for hip, knee, ankle in ((L_HIP, L_KNEE, L_ANKLE), (R_HIP, R_KNEE, R_ANKLE)):
        rotation[:, ankle, 0] -= rotation[:, hip, 0] + rotation[:, knee, 0]
        rotation[:, ankle, 2] -= rotation[:, hip, 2]
    positions = _forward_kinematics(rotation, offsets)
    positions = positions @ _axis_rotations(motion.turn, 1).transpose(0, 2, 1)
    positions = positions + _ground_contact(positions, motion.lift)[:, None]
    return positions @ _axis_rotations(yaw, 1).T + (spot[0], 0.0, spot[1])


def _phase(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Normalised time t (T,) -> action phase u (T,) in [0, 1]: a short, random idle lead-in
    and lead-out, and a smooth change of speed."""
    lead_in, lead_out = rng.uniform(0.0, 0.15, 2)
    warp = rng.uniform(-0.3, 0.3)
    warped = t + warp * np.sin(2 * np.pi * t) / (2 * np.pi)
    return np.clip(warped * (1 + lead_in + lead_out) - lead_in, 0.0, 1.0)


def _random_body(rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """A random performer's size (0.85 to 1.15) and (V, 3) bone offsets, with arm and leg
    proportions varying too."""
    body_scale = rng.uniform(0.85, 1.15)
    return body_scale, _rest_offsets(body_scale, rng.uniform(0.95, 1.05), rng.uniform(0.95, 1.05))


def _camera_view(positions: np.ndarray, height: float, pitch: float) -> np.ndarray:
    """Room positions (..., 3) -> camera coordinates (..., 3) of a camera at the room's origin,
    `height` metres above the floor, looking along +z and tilted by `pitch` degrees."""
    return (positions - (0.0, height, 0.0)) @ _axis_rotations(pitch, 0).T


def _check_arguments(seed, index, num_frames, second_person_prob, noise_std) -> None:
    for name, value in (("seed", seed), ("index", index)):
        if operator.index(value) < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value}")
    if num_frames is not None and operator.index(num_frames) < 2:
        raise ValueError(f"num_frames must be at least 2 (or None for 40 to 100), got {num_frames}")
    if not 0.0 <= second_person_prob <= 1.0:
        raise ValueError(f"second_person_prob must be in [0, 1], got {second_person_prob}")
    if not (math.isfinite(noise_std) and noise_std >= 0.0):
        raise ValueError(f"noise_std must be a finite number of metres >= 0, got {noise_std}")


def generate_sequence(
    action: int | str,
    seed: int,
    index: int = 0,
    num_frames: int | None = None,
    second_person_prob: float = 0.3,
    noise_std: float = 0.01,
) -> Sequence:
    """One synthetic sequence of `action` (a name or an index into SYNTHETIC_ACTIONS).

    Performer (size, style, timing), view and noise depend on (seed, index) only: the same
    pair gives the same array whenever it is asked for, and the same performer seen from the
    same view whatever the action. num_frames: T, or None for a random 40 to 100.
    second_person_prob: chance of a bystander standing beside the performer, in body slot 1
    (zeros otherwise); it does not change the performer.
    noise_std: Gaussian sensor noise in metres; it also scales the rare one-frame joint
    glitches (8x), so 0 gives clean kinematics.
    Returns a Sequence with data (3, T, 25, 2) float32 in camera coordinates.
    """
    action_index = _action_index(action)
    _check_arguments(seed, index, num_frames, second_person_prob, noise_std)
    # One generator drawn in a fixed order: the performer's scene and noise first, then the
    # bystander's, so that neither the action nor the bystander changes the performer.
    rng = np.random.default_rng([seed, index])
    random_num_frames = int(rng.integers(40, 101))  # drawn anyway: num_frames changes nothing else
    T = random_num_frames if num_frames is None else operator.index(num_frames)
    t = np.linspace(0.0, 1.0, T)
    body_scale, offsets = _random_body(rng)
    style = Style(
        amplitude=rng.uniform(0.8, 1.2),
        tempo=rng.uniform(),
        phase=rng.uniform(0, 2 * np.pi),
        side=int(rng.integers(2)) * 2 - 1,
    )
    yaw = rng.uniform(-45, 45)
    spot = np.array([rng.uniform(-0.4, 0.4), rng.uniform(2.6, 3.6)])
    camera_height, camera_pitch = rng.uniform(0.8, 1.2), rng.uniform(-5, 5)
    motion = SYNTHETIC_ACTIONS[action_index].motion(_phase(t, rng), style)
    _idle(motion, t, rng)
    has_bystander = rng.uniform() < second_person_prob

    data = np.zeros((2, T, NUM_JOINTS, 3))
    data[0] = _camera_view(_body_in_room(motion, offsets, yaw, spot), camera_height, camera_pitch)
    data[0] += noise_std * rng.standard_normal((T, NUM_JOINTS, 3))
    for _ in range(rng.poisson(0.5)):
        data[0, rng.integers(T), rng.integers(NUM_JOINTS)] += 8 * noise_std * rng.standard_normal(3)

    if has_bystander:
        idle = Motion.standing(T)
        _idle(idle, t, rng)
        idle.rotate_both(R_ELBOW, x=rng.uniform(0, 60))
        beside = spot + ((int(rng.integers(2)) * 2 - 1) * rng.uniform(0.8, 1.2), rng.uniform(-0.3, 0.3))
        bystander = _body_in_room(idle, _random_body(rng)[1], rng.uniform(-30, 30), beside)
        data[1] = _camera_view(bystander, camera_height, camera_pitch)
        data[1] += noise_std * rng.standard_normal((T, NUM_JOINTS, 3))

    meta = {
        "source": "synthetic",
        "name": f"synthetic-{int(seed)}-{int(index):05d}",
        "seed": int(seed),
        "index": int(index),
        "action": SYNTHETIC_ACTIONS[action_index].name,
        "performer": {"body_scale": float(body_scale), "amplitude": float(style.amplitude)},
        "view": {
            "yaw_deg": float(yaw),
            "distance": float(spot[1]),
            "camera_height": float(camera_height),
            "camera_pitch_deg": float(camera_pitch),
        },
        "second_person": bool(has_bystander),
    }
    return Sequence(np.ascontiguousarray(data.transpose(3, 1, 2, 0), dtype=np.float32), "ntu25", action_index, meta)


class SyntheticSkeletons(torch.utils.data.Dataset):
    """samples_per_class sequences of each action; item i is a Sequence of class
    i % num_classes, generated on demand from (seed, i), so it is the same in any order.

    actions: names of the classes to include (default all of SYNTHETIC_ACTIONS); labels are
    positions in this list. The other arguments are generate_sequence's.
    """

    def __init__(
        self,
        samples_per_class: int = 40,
        seed: int = 0,
        num_frames: int | None = None,
        second_person_prob: float = 0.3,
        noise_std: float = 0.01,
        actions: list[str] | None = None,
    ):
        if operator.index(samples_per_class) < 1:
            raise ValueError(f"samples_per_class must be at least 1, got {samples_per_class}")
        _check_arguments(seed, 0, num_frames, second_person_prob, noise_std)
        names = synthetic_class_names() if actions is None else list(actions)
        if not names:
            raise ValueError("actions must name at least one synthetic action")
        if len(set(names)) != len(names):
            raise ValueError(f"actions has duplicates: {names}")
        self._action_indices = [_action_index(name) for name in names]
        self._class_names = names
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.num_frames = num_frames
        self.second_person_prob = second_person_prob
        self.noise_std = noise_std

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 label of every item."""
        return np.arange(len(self)) % len(self._class_names)

    def __len__(self) -> int:
        return self.samples_per_class * len(self._class_names)

    def __getitem__(self, i: int) -> Sequence:
        i = operator.index(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} synthetic sequences")
        i %= len(self)
        label = i % len(self._class_names)
        sequence = generate_sequence(
            self._action_indices[label], self.seed, i, self.num_frames, self.second_person_prob, self.noise_std
        )
        sequence.label = label
        return sequence
