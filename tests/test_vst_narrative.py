"""VST segments, token smoothing and narratives, motion decoder and code glossary."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from skelang.data.layouts import get_layout
from skelang.vst.decoder import MotionDecoder, segment_targets
from skelang.vst.glossary import (
    build_glossary,
    describe_motion,
    format_glossary,
    glossary_lines,
    load_glossary,
    save_glossary,
)
from skelang.vst.narrative import (
    TokenRun,
    format_narrative,
    narrative_codes,
    parse_narrative,
    run_length,
    smooth_tokens,
    token_name,
)
from skelang.vst.segments import adaptive_segments, fixed_segments, pool_fixed, pool_segments


def test_fixed_segments_cover_frames():
    assert fixed_segments(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert fixed_segments(3, 5) == [(0, 3)]
    for T, L in [(1, 1), (17, 3), (30, 10)]:
        frames = [t for start, end in fixed_segments(T, L) for t in range(start, end)]
        assert frames == list(range(T))
    with pytest.raises(ValueError, match="length"):
        fixed_segments(10, 0)


def test_adaptive_segments_find_planted_changes():
    torch.manual_seed(0)
    features = torch.zeros(30, 4)
    features[10:] += torch.tensor([2.0, 0, 0, 0])
    features[22:] += torch.tensor([0, 0, 1.5, 0])
    noisy = features + 0.01 * torch.randn(30, 4)
    assert adaptive_segments(noisy, 3) == [(0, 10), (10, 22), (22, 30)]
    assert adaptive_segments(noisy, 1) == [(0, 30)]
    # Changes at 10 (largest), 11 and 20: 11 would leave a segment of 1 frame.
    steps = torch.zeros(30, 1)
    steps[10:] += 3
    steps[11:] += 2
    steps[20:] += 1
    assert adaptive_segments(steps, 3, min_length=3) == [(0, 10), (10, 20), (20, 30)]
    assert adaptive_segments(steps, 3) == [(0, 10), (10, 11), (11, 30)]


def test_pool_segments_and_pool_fixed_are_means():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, requires_grad=True)
    pooled = pool_fixed(x, 3)
    expected = torch.stack([x[:, 0:3].mean(1), x[:, 3:6].mean(1), x[:, 6:7].mean(1)], dim=1)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(pool_segments(x[0], fixed_segments(7, 3)), expected[0])
    pooled.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _path_cost(distances, codes, penalty):
    switches = sum(a != b for a, b in zip(codes[:-1], codes[1:]))
    return float(sum(distances[s, c] for s, c in enumerate(codes))) + penalty * switches


def test_smooth_tokens_penalty_zero_and_large():
    torch.manual_seed(0)
    distances = torch.rand(12, 6)
    assert torch.equal(smooth_tokens(distances, 0.0), distances.argmin(dim=1))
    single = smooth_tokens(distances, 1e6)
    assert len(set(single.tolist())) == 1
    assert single[0] == distances.sum(dim=0).argmin()


def test_smooth_tokens_hand_computed():
    distances = torch.tensor([[0.0, 1.0], [0.6, 0.0], [0.0, 1.0]])
    # Switching twice costs 2 * 0.5 = 1.0 > 0.6 for staying on code 0.
    assert smooth_tokens(distances, 0.5).tolist() == [0, 0, 0]
    # Switching twice costs 2 * 0.2 = 0.4 < 0.6.
    assert smooth_tokens(distances, 0.2).tolist() == [0, 1, 0]
    # Ties between equal costs go to the lowest code id.
    assert smooth_tokens(torch.ones(3, 4), 1.0).tolist() == [0, 0, 0]


def test_smooth_tokens_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    for _ in range(40):
        S = int(torch.randint(1, 6, (1,), generator=generator))
        K = int(torch.randint(1, 5, (1,), generator=generator))
        distances = torch.rand(S, K, generator=generator, dtype=torch.float64)
        penalty = float(torch.rand(1, generator=generator)) * 0.8
        best = min(itertools.product(range(K), repeat=S), key=lambda codes: _path_cost(distances, codes, penalty))
        codes = smooth_tokens(distances, penalty, candidates=K).tolist()
        assert _path_cost(distances, codes, penalty) == pytest.approx(_path_cost(distances, best, penalty), abs=1e-12)
        assert codes == list(best)


def test_run_length_format_parse_round_trip():
    spans = fixed_segments(14, 2)
    runs = run_length(torch.tensor([17, 17, 17, 5, 42, 42, 3]), spans)
    assert runs[0] == TokenRun(code=17, count=3, start=0, end=6)
    assert runs[-1] == TokenRun(code=3, count=1, start=12, end=14)
    text = format_narrative(runs)
    assert text == "<a17>x3 <a5> <a42>x2 <a3>"
    assert parse_narrative(text) == [(17, 3), (5, 1), (42, 2), (3, 1)]
    assert narrative_codes(text) == [17, 17, 17, 5, 42, 42, 3]
    assert token_name(9) == "<a9>" and parse_narrative("") == []
    for bad in ["<a17>x0", "<b3>", "a3", "<a3>x", "<a-1>"]:
        with pytest.raises(ValueError, match="malformed narrative token"):
            parse_narrative(f"<a1> {bad}")
    with pytest.raises(ValueError, match="same length"):
        run_length([1, 2], spans)


def test_decoder_shapes_and_training_reduces_loss():
    torch.manual_seed(0)
    decoder = MotionDecoder(code_dim=8, segment_length=4, num_joints=5, hidden=32)
    assert decoder(torch.randn(2, 6, 8)).shape == (2, 6, 3, 4, 5)
    assert decoder(torch.randn(2, 8)).shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="z must have shape"):
        decoder(torch.randn(2, 7))
    z, target = torch.randn(16, 8), torch.randn(16, 3, 4, 5)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    first = decoder.reconstruction_loss(z, target).item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = decoder.reconstruction_loss(z, target)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first


def test_segment_targets_pads_with_last_frame():
    x = torch.arange(2 * 3 * 7 * 2, dtype=torch.float32).reshape(2, 3, 7, 2)
    clips = segment_targets(x, 3)
    assert clips.shape == (2, 3, 3, 3, 2)
    torch.testing.assert_close(clips[:, 1], x[:, :, 3:6])
    torch.testing.assert_close(clips[:, 2], x[:, :, 6:7].expand(2, 3, 3, 2))


# Neutral standing pose for ntu25, facing the camera: y up, performer's right at larger x.
_LEFT_SIDE = {
    "shoulder": (-0.18, 0.5, 0),
    "elbow": (-0.2, 0.25, 0),
    "wrist": (-0.2, 0.02, 0),
    "hand": (-0.2, -0.05, 0),
    "hand_tip": (-0.2, -0.12, 0),
    "thumb": (-0.17, -0.07, 0),
    "hip": (-0.1, 0, 0),
    "knee": (-0.1, -0.45, 0),
    "ankle": (-0.1, -0.85, 0),
    "foot": (-0.1, -0.9, -0.1),
}
_CENTRE = {
    "spine_base": (0, 0, 0),
    "spine_middle": (0, 0.25, 0),
    "spine_shoulder": (0, 0.5, 0),
    "neck": (0, 0.58, 0),
    "head": (0, 0.7, 0),
}
_ARM = ("elbow", "wrist", "hand", "hand_tip", "thumb")


def _standing_clip(frames: int) -> np.ndarray:
    """(3, frames, 25) clip of the neutral pose."""
    layout = get_layout("ntu25")
    pose = dict(_CENTRE)
    for part, (x, y, z) in _LEFT_SIDE.items():
        pose[f"left_{part}"] = (x, y, z)
        pose[f"right_{part}"] = (-x, y, z)
    joints = np.array([pose[name] for name in layout.joint_names], dtype=np.float64).T  # (3, 25)
    return np.repeat(joints[:, None], frames, axis=1)


def _move(clip: np.ndarray, names, offset) -> np.ndarray:
    """Move the named joints linearly from 0 to `offset` (3,) over the clip's frames."""
    layout = get_layout("ntu25")
    ramp = np.linspace(0, 1, clip.shape[1])[None, :, None] * np.asarray(offset)[:, None, None]
    joints = [layout.joint_names.index(name) for name in names]
    clip[:, :, joints] += ramp
    return clip


def test_describe_motion_right_hand_over_head():
    clip = _standing_clip(20)
    clip = _move(clip, ["right_elbow"], (0, 0.5, 0))
    clip = _move(clip, [f"right_{part}" for part in _ARM[1:]], (0, 1.05, 0))
    text = describe_motion(clip, get_layout("ntu25"))
    assert text.startswith("right hand rises quickly"), text
    assert "right hand above the head" in text and "left hand" not in text, text


def test_describe_motion_still_and_left_move():
    layout = get_layout("ntu25")
    still = describe_motion(_standing_clip(10), layout)
    assert still.startswith("the body holds still") and "above the head" not in still, still
    clip = _move(_standing_clip(30), [f"left_{part}" for part in _ARM], (-0.3, 0, 0))
    text = describe_motion(clip, layout)
    assert text.startswith("left hand moves to the left slowly"), text
    # Performer turned to face away from the camera: their left is now +x.
    turned = clip * np.array([-1.0, 1.0, -1.0])[:, None, None]
    assert describe_motion(turned, layout) == text


def test_describe_motion_hands_together():
    clip = _standing_clip(15)
    clip = _move(clip, [f"left_{part}" for part in _ARM[1:]], (0.18, 0.2, -0.3))
    clip = _move(clip, [f"right_{part}" for part in _ARM[1:]], (-0.18, 0.2, -0.3))
    text = describe_motion(clip, get_layout("ntu25"))
    assert "hands together" in text and "moves forward" in text, text


def test_glossary_build_format_save_load(tmp_path):
    torch.manual_seed(0)
    layout = get_layout("ntu25")
    decoder = MotionDecoder(code_dim=4, segment_length=6, num_joints=25, hidden=16)
    codebook, usage = torch.randn(5, 4), torch.tensor([3, 0, 1, 0, 12])
    entries = build_glossary(decoder, codebook, usage, layout)
    assert [(e.code, e.uses) for e in entries] == [(0, 3), (2, 1), (4, 12)]
    assert all(e.description for e in entries) and decoder.training
    assert [e.code for e in build_glossary(decoder, codebook, usage, layout, min_uses=2)] == [0, 4]
    table = format_glossary(entries).splitlines()
    assert table[0].split() == ["code", "uses", "description"] and len(table) == 4
    column = len(table[0]) - len("description")  # where every description starts
    assert [line[column:] for line in table[1:]] == [e.description for e in entries]
    assert [line.split()[0] for line in table[1:]] == ["<a0>", "<a2>", "<a4>"]
    # a narrative's lines: one per distinct token, a code the glossary lacks (never used) named
    lines = glossary_lines("<a4>x2 <a1> <a4> <a0>", entries)
    assert [line.split(":")[0] for line in lines] == ["<a4>", "<a1>", "<a0>"]
    assert lines[1] == "<a1>: not in the glossary (never used on the training data)"
    assert lines[0] == f"<a4>: {entries[2].description}"
    path = tmp_path / "glossary.json"
    save_glossary(entries, path)
    assert load_glossary(path) == entries
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    path.write_text('[{"code": 1, "uses": "many"}]')
    with pytest.raises(ValueError, match="glossary.json"):
        load_glossary(path)
