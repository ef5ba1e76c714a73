"""A straightforward pure-Python reader of NTU RGB+D .skeleton files: the reference for
skelang._C.parse_ntu_skeleton (same output), used by its parity test and benchmark."""

from __future__ import annotations

import numpy as np


def parse_ntu_skeleton(path: str) -> dict:
    with open(path) as f:
        lines = f.read().split("\n")
    cursor = 0

    def next_numbers():
        nonlocal cursor
        values = lines[cursor].split()
        cursor += 1
        return values

    num_frames = int(next_numbers()[0])
    bodies_per_frame, body_frame, body_id, body_info, joints = [], [], [], [], []
    for frame in range(num_frames):
        bodies = int(next_numbers()[0])
        bodies_per_frame.append(bodies)
        for _ in range(bodies):
            info = next_numbers()
            body_frame.append(frame)
            body_id.append(int(info[0]))
            body_info.append([float(v) for v in info[1:]])
            num_joints = int(next_numbers()[0])
            joints.append([[float(v) for v in next_numbers()] for _ in range(num_joints)])
    B = len(body_id)
    return {
        "num_frames": num_frames,
        "bodies_per_frame": np.array(bodies_per_frame, dtype=np.int32),
        "body_frame": np.array(body_frame, dtype=np.int32),
        "body_id": np.array(body_id, dtype=np.uint64),
        "body_info": np.array(body_info, dtype=np.float64).reshape(B, 9),
        "joints": np.array(joints, dtype=np.float64).reshape(B, 25, 12),
    }
