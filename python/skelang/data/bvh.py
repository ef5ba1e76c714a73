"""BVH (Biovision Hierarchy) motion capture files, such as the CMU Graphics Lab database's,
as joint positions by forward kinematics.

A BVH file has a HIERARCHY section, a tree of joints each with an OFFSET from its parent and
a list of CHANNELS (positions, and Euler angles in degrees), and a MOTION section: the frame
count, the frame time, and one row of channel values per frame.

Forward kinematics follows the usual BVH convention: a joint's local rotation is the product
of its rotation channels in the order listed ("Zrotation Xrotation Yrotation" gives
Rz @ Rx @ Ry, acting on column vectors), and its global transform is
parent global @ translate(offset + position channels) @ local rotation. Adding the position
channels to the offset is the usual reading for the root; files whose joints all have
position channels holding their whole local translation (some MotionBuilder exports) give
the right positions this way only if their OFFSETs are zero.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from skelang.data.layouts import layout_from_hierarchy, layout_names, register_layout
from skelang.data.sequence import BEYOND_FLOAT32, Sequence, within_float32

# Metres per unit of the CMU database, from its FAQ (mocap.cs.cmu.edu/faqs.php): lengths are
# in inches over the ASF files' length scale 0.45, so multiply by (1.0 / 0.45) * 2.54 / 100.
# The database's BVH conversions (cgspeed's) keep these units: CMU subject 131's thigh comes
# out at 0.41 m and the hips about 0.9 m above the toes.
CMU_SCALE = 0.056444

CHANNEL_NAMES = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")
_CHANNELS_BY_LOWER_CASE = {name.lower(): name for name in CHANNEL_NAMES}


@dataclasses.dataclass
class BvhMotion:
    """The skeleton and motion of one BVH file, joints in file order (parents first).

    joint_names:      (V,) joint names.
    parents:          (V,) int64 parent joint of each joint, -1 for the root.
    offsets:          (V, 3) float64 offset of each joint from its parent, in file units.
    channels:         (V,) lists of each joint's channel names in the file's order, e.g.
                      ["Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation",
                      "Xrotation"] for a root.
    end_site_parents: (E,) int64 joint that each End Site belongs to.
    end_site_offsets: (E, 3) float64 offset of each End Site from that joint.
    frame_time:       seconds per frame.
    motion:           (T, total channels) float64 channel values, one row per frame, joints
                      in order; positions in file units, rotations in degrees.
    """

    joint_names: list[str]
    parents: np.ndarray
    offsets: np.ndarray
    channels: list[list[str]]
    end_site_parents: np.ndarray
    end_site_offsets: np.ndarray
    frame_time: float
    motion: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.motion.shape[0]

    @property
    def fps(self) -> float:
        """1 / frame_time, rounded to the nearest integer when within 0.01% of it: frame
        times are written with few digits (CMU's .0083333 for 120 fps)."""
        fps = 1.0 / self.frame_time
        return float(round(fps)) if abs(fps - round(fps)) < 1e-4 * fps else fps

    def joint_tree(self, include_end_sites: bool = False) -> tuple[list[str], list[int]]:
        """(V [+ E],) joint names and parents; End Sites, if included, come after the joints
        and are named "<joint>_end" after the joint they belong to."""
        names, parents = list(self.joint_names), [int(p) for p in self.parents]
        if include_end_sites:
            names += [f"{self.joint_names[p]}_end" for p in self.end_site_parents]
            parents += [int(p) for p in self.end_site_parents]
        return names, parents

    def positions(self, include_end_sites: bool = False) -> np.ndarray:
        """(T, V [+ E], 3) float64 global joint (and End Site) positions in file units."""
        T, V = self.num_frames, len(self.joint_names)
        rotations = np.empty((V, T, 3, 3))  # global rotation of each joint
        positions = np.empty((T, V, 3))
        column = 0
        for joint, parent in enumerate(self.parents):
            local_rotation = np.broadcast_to(np.eye(3), (T, 3, 3))
            translation = np.tile(self.offsets[joint], (T, 1))
            for channel in self.channels[joint]:
                axis = "XYZ".index(channel[0])
                if channel.endswith("position"):
                    translation[:, axis] += self.motion[:, column]
                else:
                    local_rotation = local_rotation @ _axis_rotations(axis, self.motion[:, column])
                column += 1
            if parent == -1:
                rotations[joint] = local_rotation
                positions[:, joint] = translation
            else:
                rotations[joint] = rotations[parent] @ local_rotation
                positions[:, joint] = positions[:, parent] + (rotations[parent] @ translation[..., None])[..., 0]
        if not include_end_sites:
            return positions
        parents = self.end_site_parents
        end_sites = positions[:, parents] + np.einsum("etij,ej->tei", rotations[parents], self.end_site_offsets)
        return np.concatenate([positions, end_sites], axis=1)


def _axis_rotations(axis: int, degrees: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations by `degrees` (T,) about axis 0 (x), 1 (y) or 2 (z), right-handed."""
    radians = np.radians(degrees)
    cos, sin = np.cos(radians), np.sin(radians)
    i, j = (axis + 1) % 3, (axis + 2) % 3  # the plane rotated, i towards j
    R = np.zeros((len(degrees), 3, 3))
    R[:, axis, axis] = 1
    R[:, i, i] = R[:, j, j] = cos
    R[:, i, j] = -sin
    R[:, j, i] = sin
    return R


class _Words:
    """The whitespace-separated words of `lines` in order, for the hierarchy section."""

    def __init__(self, lines: list[str], source: str):
        self.lines, self.source = lines, source
        self.line = 0  # 1-based line of the last word read
        self._next_line = 0
        self._words: list[str] = []  # the words left on `line`

    def error(self, what: str) -> ValueError:
        return ValueError(f"{self.source}:{self.line}: {what}")

    def next(self, expected: str) -> str:
        while not self._words:
            if self._next_line == len(self.lines):
                raise self.error(f"expected {expected}, found the end of the file (truncated?)")
            self._words = self.lines[self._next_line].split()
            self._next_line += 1
        self.line = self._next_line
        return self._words.pop(0)

    def expect(self, word: str, where: str):
        """The next word is `word`, in any letter case (writers differ: HIERARCHY, Hierarchy)."""
        found = self.next(f"{word!r} {where}")
        if found.upper() != word.upper():
            raise self.error(f"expected {word!r} {where}, found {found!r}")

    def peek(self) -> str | None:
        """The next word on the current line, not consumed (None at the line's end)."""
        return self._words[0] if self._words else None

    def rest_of_line(self) -> list[str]:
        words, self._words = self._words, []
        return words


@dataclasses.dataclass
class _Block:
    """A ROOT, JOINT or End Site being read; `index` among the joints, -1 for an End Site."""

    keyword: str
    name: str
    line: int
    index: int
    parent: int
    offset: list[float] | None = None
    channels: list[str] | None = None

    def __str__(self):
        return f"{self.keyword} {self.name} (line {self.line})"


def _finite_number(words: _Words, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise words.error(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise words.error(f"{value!r} is not a finite number")
    return number


def _offset(words: _Words) -> list[float]:
    values = words.rest_of_line()
    if len(values) != 3:
        raise words.error(f"expected 3 numbers after OFFSET, found {len(values)}")
    return [_finite_number(words, value) for value in values]


def _channels(words: _Words) -> list[str]:
    values = words.rest_of_line()
    if not values or not values[0].isdecimal():
        raise words.error(f"expected the channel count after CHANNELS, found {values[0] if values else 'nothing'!r}")
    count, names = int(values[0]), values[1:]
    if len(names) != count:
        raise words.error(f"CHANNELS declares {count} channels but lists {len(names)}")
    channels = []
    for name in names:
        if name.lower() not in _CHANNELS_BY_LOWER_CASE:
            raise words.error(f"unknown channel {name!r} (expected {', '.join(CHANNEL_NAMES)})")
        channels.append(_CHANNELS_BY_LOWER_CASE[name.lower()])
    if len(set(channels)) != len(channels):
        raise words.error(f"CHANNELS lists a channel twice: {' '.join(names)}")
    return channels


def _parse_hierarchy(words: _Words) -> tuple[list[_Block], list[_Block]]:
    """The joints and End Sites of HIERARCHY ... MOTION, in file order."""
    joints: list[_Block] = []
    end_sites: list[_Block] = []
    joint_names: set[str] = set()

    def open_block(keyword: str, parent: int) -> _Block:
        if keyword == "End Site":
            block = _Block(keyword, f"of {joints[parent].name}", words.line, -1, parent)
            end_sites.append(block)
        else:
            # The name is the rest of the line: 3ds Max Biped and Rocketbox write "Bip01 L Thigh".
            first = words.next(f"a joint name after {keyword}")
            parts = [first, *words.rest_of_line()]
            brace_on_line = len(parts) > 1 and parts[-1] == "{"
            name = " ".join(parts[:-1] if brace_on_line else parts)
            if name == "{":
                raise words.error(f"expected a joint name after {keyword}, found '{{'")
            if name in joint_names:
                raise words.error(f"joint name {name!r} is used twice")
            joint_names.add(name)
            block = _Block(keyword, name, words.line, len(joints), parent)
            joints.append(block)
            if brace_on_line:
                return block
        words.expect("{", f"after {keyword} {block.name}")
        return block

    words.expect("HIERARCHY", "at the start of the file")
    words.expect("ROOT", "after HIERARCHY")
    open_blocks = [open_block("ROOT", -1)]
    while open_blocks:
        block = open_blocks[-1]
        is_joint = block.keyword != "End Site"
        expected = "OFFSET, CHANNELS, JOINT, End Site or '}'" if is_joint else "OFFSET or '}'"
        found = words.next(f"{expected} in {block}")
        word = found.upper()  # keywords in any letter case (Offset, Channels, Joint, END SITE)
        if word == "OFFSET" and block.offset is None:
            block.offset = _offset(words)
        elif word == "CHANNELS" and is_joint and block.channels is None:
            block.channels = _channels(words)
        elif word == "OFFSET" or (word == "CHANNELS" and is_joint):
            raise words.error(f"a second {found} in {block}")
        elif word == "JOINT" and is_joint:
            open_blocks.append(open_block("JOINT", block.index))
        elif word in ("END", "ENDSITE") and is_joint:
            if word == "END":
                words.expect("Site", "after End")
            open_blocks.append(open_block("End Site", block.index))
        elif word == "}":
            if block.offset is None:
                raise words.error(f"{block} has no OFFSET")
            if is_joint and block.channels is None:
                raise words.error(f"{block} has no CHANNELS")
            open_blocks.pop()
        else:
            raise words.error(f"expected {expected} in {block}, found {found!r}")
    words.expect("MOTION", "after the hierarchy")
    if words.rest_of_line():
        raise words.error("unexpected words after MOTION")
    return joints, end_sites


def _parse_motion(source: str, lines: list[str], motion_line: int, num_channels: int) -> tuple[float, np.ndarray]:
    """Frame time and (T, num_channels) values of the MOTION section, which starts on the
    1-based `motion_line`."""
    rows = [
        (number, line) for number, line in enumerate(lines[motion_line:], motion_line + 1) if line.strip()
    ]  # (line number, text) of the non-blank lines after MOTION

    def header(index: int, pattern: str, what: str) -> tuple[int, str]:
        if index >= len(rows):
            last = rows[-1][0] if rows else motion_line
            raise ValueError(f"{source}:{last}: expected {what}, found the end of the file (truncated?)")
        number, line = rows[index]
        match = re.fullmatch(pattern, line.strip(), re.IGNORECASE)
        if match is None:
            raise ValueError(f"{source}:{number}: expected {what}, found {line.strip()!r:.60}")
        return number, match.group(1)

    frames_line, frames = header(0, r"Frames:\s*(\S+)", "'Frames: <count>'")
    if not frames.isdecimal():
        raise ValueError(f"{source}:{frames_line}: {frames!r} is not a frame count")
    time_line, frame_time = header(1, r"Frame\s+Time:\s*(\S+)", "'Frame Time: <seconds>'")
    try:
        seconds = float(frame_time)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"{source}:{time_line}: frame time {frame_time!r} is not a positive number of seconds")
    rows = rows[2:]
    motion = np.empty((len(rows), num_channels))
    for t, (number, line) in enumerate(rows):
        values = line.split()
        if len(values) != num_channels:
            raise ValueError(
                f"{source}:{number}: expected {num_channels} values (the channels "
                f"of the hierarchy), found {len(values)}"
            )
        try:
            motion[t] = values
        except ValueError:
            raise ValueError(f"{source}:{number}: non-numeric value in a MOTION row") from None
        if not np.isfinite(motion[t]).all():
            raise ValueError(f"{source}:{number}: NaN or infinite value in a MOTION row")
    if len(rows) != int(frames):
        raise ValueError(
            f"{source}:{frames_line}: 'Frames: {frames}' but {len(rows)} rows of "
            f"values follow{' (truncated?)' if len(rows) < int(frames) else ''}"
        )
    return seconds, motion


def parse_bvh_text(text: str | bytes, source: str) -> BvhMotion:
    """One BVH document; `source` names it in errors ("<source>:<line>: <what>")."""
    if isinstance(text, bytes):
        if b"\0" in text:
            raise ValueError(f"{source}: a binary file (it holds NUL bytes), not BVH text")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:  # names in a legacy 8-bit code page (3ds Max, MotionBuilder);
            text = text.decode("latin-1")  # keywords and numbers are ASCII in every one
    if not text.strip():
        raise ValueError(f"{source}: empty file")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    words = _Words(lines, source)
    joints, end_sites = _parse_hierarchy(words)
    channels = [joint.channels for joint in joints]
    frame_time, motion = _parse_motion(source, lines, words.line, sum(map(len, channels)))
    return BvhMotion(
        joint_names=[joint.name for joint in joints],
        parents=np.array([joint.parent for joint in joints], dtype=np.int64),
        offsets=np.array([joint.offset for joint in joints], dtype=np.float64),
        channels=channels,
        end_site_parents=np.array([site.parent for site in end_sites], dtype=np.int64),
        end_site_offsets=np.array([site.offset for site in end_sites], dtype=np.float64).reshape(-1, 3),
        frame_time=frame_time,
        motion=motion,
    )


def parse_bvh(path: str | Path) -> BvhMotion:
    path = Path(path)
    return parse_bvh_text(path.read_bytes(), str(path))


def nearest_frames(num_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """(T',) int64 indices of the frames nearest to the times 0, 1 / target_fps, 2 / target_fps,
    ... within the sequence: every 4th frame from 120 to 30 fps."""
    step = fps / target_fps
    indices = np.floor(np.arange(0, num_frames, step) + 0.5).astype(np.int64)
    return indices[indices < num_frames]


def hierarchy_layout_name(joint_names: list[str], parents: list[int]) -> str:
    """Name of the layout of a joint tree, "bvh-<V>-<hash>", registered on first use."""
    key = json.dumps([list(joint_names), [int(p) for p in parents]])
    name = f"bvh-{len(joint_names)}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    if name not in layout_names():
        register_layout(layout_from_hierarchy(name, joint_names, parents))
    return name


def read_bvh(
    path: str | Path, scale: float = CMU_SCALE, include_end_sites: bool = False, target_fps: float | None = None
) -> Sequence:
    """A BVH file as a Sequence (3, T, V [+ E], 1) of joint positions: file units times
    `scale` (CMU_SCALE: CMU units to metres), axes as in the file (y up for CMU).

    include_end_sites: add the End Sites as joints "<joint>_end" after the joints.
    target_fps:        keep the frames nearest to this rate (120 -> 30 fps: every 4th frame).
    The layout is derived from the joint tree and registered in this process (see
    `hierarchy_layout_name`); another process (a worker pool, a reopened cache) registers it
    with hierarchy_layout_name(meta["joint_names"], meta["parents"]). meta: source, name,
    fps (of the returned frames), frame_time (the file's, seconds), joint_names, parents.
    """
    bvh = parse_bvh(path)
    fps = bvh.fps
    if target_fps is not None:
        if not 0 < target_fps < math.inf:
            raise ValueError(f"{path}: target_fps must be a positive number, got {target_fps!r}")
        frames = nearest_frames(bvh.num_frames, fps, target_fps)
        bvh, fps = dataclasses.replace(bvh, motion=bvh.motion[frames]), float(target_fps)
    positions = bvh.positions(include_end_sites) * scale  # (T, V, 3)
    beyond = ~within_float32(positions).reshape(len(positions), -1).all(1)
    if beyond.any():
        first = int(np.flatnonzero(beyond)[0])
        first = int(frames[first]) if target_fps is not None else first  # the file's numbering
        raise ValueError(f"{path}: MOTION frame {first} (0-based): joint positions hold {BEYOND_FLOAT32}")
    joint_names, parents = bvh.joint_tree(include_end_sites)
    data = np.ascontiguousarray(positions.transpose(2, 0, 1)[..., None], dtype=np.float32)
    meta = {
        "source": str(path),
        "name": Path(path).stem,
        "fps": fps,
        "frame_time": bvh.frame_time,
        "joint_names": joint_names,
        "parents": parents,
    }
    return Sequence(data=data, layout=hierarchy_layout_name(joint_names, parents), meta=meta)
