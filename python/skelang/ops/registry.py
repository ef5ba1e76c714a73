"""Every skelang operator in one table: its wrapper, its pure-PyTorch reference, sample inputs,
tolerances, bad inputs with the error each must raise, and the shapes the benchmarks time.

The table-driven tests (tests/test_op_registry.py) run, for every entry: parity with the
reference (forward and every gradient) for each sample and dtype, float64 gradcheck,
torch.library.opcheck (of the op and of its explicit backward op), torch.compile, the bad
inputs on CPU and on meta tensors, and CUDA parity where a GPU exists. `OPS` is keyed by
the op's name; `op_names()` lists what is registered with the dispatcher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

import skelang.ops as ops
import skelang.reference as reference

Args = tuple
# Reduced precision is compared with the reference in float64 on the same (rounded) inputs:
# the largest error may be this fraction of the largest magnitude (+ 1) of the exact result.
REDUCED_TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 4e-3}


@dataclasses.dataclass(frozen=True)
class Sample:
    """Positional arguments of one call; `grads`: indices of the arguments that get gradients."""

    args: Args
    grads: tuple[int, ...] = ()
    name: str = ""


@dataclasses.dataclass(frozen=True)
class BadInput:
    """Arguments that must raise an error matching `message`; `not_on_meta`: a meta tensor
    cannot trigger the check (it reads tensor values, such as an index range, or depends on
    the device, such as float16 on the CPU)."""

    args: Args
    message: str
    not_on_meta: bool = False


@dataclasses.dataclass(frozen=True)
class OpSpec:
    name: str
    op: Callable  # skelang.ops wrapper: args -> tensor(s) to compare
    reference: Callable  # skelang.reference twin, same arguments
    samples: Callable[[torch.dtype, torch.device], list[Sample]]
    bad_inputs: Callable[[], list[BadInput]] = lambda: []
    backward: str | None = None  # the explicit backward op
    backward_args: Callable[[Sample], Args] | None = None  # its arguments for a forward sample
    backward_bad_inputs: Callable[[], list[BadInput]] = lambda: []  # of the backward op
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16)  # on CPU; CUDA adds float16
    tolerance: dict = dataclasses.field(
        default_factory=lambda: {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-9)}
    )
    compare: Callable | None = None  # compare(ours, theirs, sample, tolerance) where outputs may tie
    compiles: bool = True
    bench: dict = dataclasses.field(default_factory=dict)  # shapes the benchmarks time (full and "quick")

    @property
    def overload(self):
        return getattr(torch.ops.skelang, self.name).default


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, dtype, device, grad=False):
    return torch.randn(*shape, dtype=dtype, generator=g).to(device).requires_grad_(grad)


def _unit(g, *shape, dtype, device):
    return F.normalize(torch.randn(*shape, dtype=dtype, generator=g), dim=-1).to(device).requires_grad_()


# --- graph_aggregate -------------------------------------------------------------------------

TOPOLOGY_SHAPES = {
    "shared": lambda N, C, V: (1, 1, V, V),  # ST-GCN
    "per_channel": lambda N, C, V: (1, C, V, V),  # CTR-GCN
    "per_sample": lambda N, C, V: (N, 1, V, V),  # GSM attention maps
    "per_sample_channel": lambda N, C, V: (N, C, V, V),
}


def _graph_aggregate_samples(dtype, device):
    samples = []
    for seed, (kind, shape) in enumerate(TOPOLOGY_SHAPES.items()):
        for N, C, T, V in ((3, 5, 7, 25), (1, 1, 1, 3), (2, 3, 2, 17)):
            g = _generator(seed * 10 + V)
            x = _randn(g, N, C, T, V, dtype=dtype, device=device, grad=True)
            A = _randn(g, *shape(N, C, V), dtype=dtype, device=device, grad=True)
            samples.append(Sample((x, A), (0, 1), f"{kind} N{N} C{C} T{T} V{V}"))
    return samples


def _graph_aggregate_bad():
    cases = [  # (x shape, A shape, dtype of x, dtype of A, message)
        ((3, 5, 7), (1, 1, 7, 7), torch.float32, torch.float32, r"x must be a 4-D tensor \(N, C, T, V\), got a 3-D"),
        ((2, 3, 4, 5), (5, 5), torch.float32, torch.float32, r"A must be a 4-D tensor \(Na, Ca, V, V\), got a 2-D"),
        ((2, 3, 4, 5), (1, 1, 6, 6), torch.float32, torch.float32, r"A must be \(Na, Ca, V, V\) with V = 5"),
        ((2, 3, 4, 5), (1, 1, 5, 4), torch.float32, torch.float32, r"A must be \(Na, Ca, V, V\) with V = 5"),
        ((2, 3, 4, 5), (3, 1, 5, 5), torch.float32, torch.float32, r"A.size\(0\) .* must be 1 or 2, got 3"),
        ((2, 3, 4, 5), (1, 2, 5, 5), torch.float32, torch.float32, r"A.size\(1\) .* must be 1 or 3, got 2"),
        ((2, 3, 4, 5), (1, 1, 5, 5), torch.float32, torch.float64, r"x and A must have the same dtype"),
        ((2, 3, 4, 5), (1, 1, 5, 5), torch.int64, torch.int64, r"x must be float32, float64 or bfloat16 .*, got Long"),
        ((2, 3, 4, 5), (1, 1, 5, 5), torch.float16, torch.float16, r"\(float16 on CUDA\), got Half"),
    ]
    return [
        BadInput((torch.ones(xs, dtype=xd), torch.ones(As, dtype=Ad)), m, not_on_meta=xd == torch.float16)
        for xs, As, xd, Ad, m in cases
    ]


def _grad_topology_bad():
    x = torch.ones(2, 3, 4, 5)
    return [
        BadInput((x, x, 3, 3), "topology_batch must be 1 or 2, got 3"),
        BadInput((x, x, 1, 2), "topology_channels must be 1 or 3, got 2"),
        BadInput((torch.ones(2, 3, 4, 6), x, 1, 1), "grad_y and x must have the same shape"),
    ]


def _grad_topology_samples(dtype, device):
    samples = []
    for seed, (Na, Ca) in enumerate(((1, 1), (1, 5), (3, 1), (3, 5))):
        g = _generator(seed)
        grad_y = _randn(g, 3, 5, 4, 9, dtype=dtype, device=device)
        x = _randn(g, 3, 5, 4, 9, dtype=dtype, device=device)
        samples.append(Sample((grad_y, x, Na, Ca), (), f"Na{Na} Ca{Ca}"))
    return samples


# --- composite_aggregate -----------------------------------------------------------------------


def _composite_inputs(g, N, K, C, T, V, R, dtype, device):
    shapes = [(N, K, C, T, V), (N, K, R, V), (N, K, R, V), (K, C, R), (K, C), (1,), (K, V, V)]
    return tuple(_randn(g, *shape, dtype=dtype, device=device, grad=True) for shape in shapes)


def _composite_samples(dtype, device):
    shapes = [
        dict(N=3, K=3, C=5, T=7, V=6, R=4),
        dict(N=1, K=1, C=1, T=1, V=1, R=1),
        dict(N=2, K=2, C=8, T=6, V=25, R=2),
        dict(N=5, K=2, C=16, T=3, V=20, R=8),
        dict(N=2, K=0, C=3, T=4, V=5, R=2),  # no partition: zeros, as the reference's empty sum
    ]
    return [
        Sample(_composite_inputs(_generator(i), **shape, dtype=dtype, device=device), tuple(range(7)), str(shape))
        for i, shape in enumerate(shapes)
    ]


def _composite_bad():
    good = [t.detach() for t in _composite_inputs(_generator(0), 3, 3, 5, 7, 6, 4, torch.float64, "cpu")]
    cases = [
        (0, (3, 3, 5, 7), r"x must be a 5-D tensor \(N, K, C, T, V\)"),
        (1, (3, 3, 4, 5), r"phi must be \(N, K, R, V\)"),
        (2, (3, 3, 3, 6), "psi must have phi's shape"),
        (3, (3, 4, 4), r"weight must be \(K, C, R\) = \(3, 5, 4\)"),
        (4, (3, 4), r"bias must be \(K, C\)"),
        (5, (2,), "alpha must hold one value"),
        (6, (2, 6, 6), r"topology must be \(K, V, V\)"),
    ]
    bad = []
    for index, shape, message in cases:
        args = list(good)
        args[index] = torch.zeros(shape, dtype=torch.float64)
        bad.append(BadInput(tuple(args), message))
    args = list(good)
    args[3] = args[3].float()
    bad.append(BadInput(tuple(args), "x and weight must have the same dtype"))
    return bad


def _composite_backward_args(sample):
    x = sample.args[0]
    N, _, C, T, V = x.shape
    grad_y = torch.randn(N, C, T, V, dtype=x.dtype, generator=_generator(1)).to(x.device)
    return (grad_y, *(t.detach() for t in sample.args))


# --- axis_attention ----------------------------------------------------------------------------


def _axis_attention_samples(dtype, device):
    samples = []
    for axis in (2, 3):
        for heads, N, D, T, V in ((1, 2, 4, 7, 6), (4, 2, 4, 7, 6), (2, 1, 3, 1, 5)):
            g = _generator(axis * 10 + heads)
            L = V if axis == 3 else T
            qkv = _randn(g, N, 3 * heads * D, T, V, dtype=dtype, device=device, grad=True)
            bias = _randn(g, heads, L, L, dtype=dtype, device=device, grad=True)
            samples.append(Sample((qkv, bias, heads, axis), (0, 1), f"axis {axis} heads {heads} T{T} V{V}"))
    return samples


def _axis_attention_bad():
    qkv = torch.randn(2, 12, 4, 5)
    return [
        BadInput((qkv, torch.zeros(2, 5, 5), 2, 1), r"axis must be 2 .frames. or 3 .joints."),
        BadInput((qkv, torch.zeros(2, 4, 4), 2, 3), r"bias must be \(H, L, L\) = \(2, 5, 5\) for axis 3"),
        BadInput((qkv, torch.zeros(5, 5, 5), 5, 3), "channels must be 3 x heads x D"),
        BadInput((qkv, torch.zeros(0, 5, 5), 0, 3), "heads must be positive"),
        BadInput((qkv, torch.zeros(2, 5, 5), 2**40, 3), "channels must be 3 x heads x D"),
    ]


def _plain_axis_attention(qkv, bias, heads, axis):
    return torch.ops.skelang.axis_attention.default(qkv, bias, heads, axis)


def _axis_attention_backward_args(sample, probs=False):
    qkv, bias, heads, axis = sample.args
    N, _, T, V = qkv.shape
    grad = torch.randn(N, qkv.shape[1] // 3, T, V, dtype=qkv.dtype, generator=_generator(2)).to(qkv.device)
    kept = ops.axis_attention_with_probs(qkv.detach(), bias.detach(), heads, axis)[1] if probs else None
    return (grad, qkv.detach(), bias.detach(), kept, heads, axis)


def _axis_attention_backward_bad():
    grad, qkv, bias = torch.ones(2, 4, 5, 6), torch.ones(2, 12, 5, 6), torch.ones(2, 6, 6)
    return [
        BadInput((grad, qkv, bias, torch.ones(10, 2, 5, 5), 2, 3), r"probs must be \(S, H, L, L\) = \(10, 2, 6, 6\)"),
        BadInput(
            (grad, qkv, bias, torch.ones(10, 2, 6, 6, dtype=torch.float64), 2, 3),
            "probs and qkv must have the same dtype",
        ),
        BadInput((torch.ones(2, 4, 5, 5), qkv, bias, None, 2, 3), r"grad_out must be \(N, C, T, V\) = \(2, 4, 5, 6\)"),
    ]


# --- multiscale_temporal_conv ------------------------------------------------------------------


def _mstc_samples(dtype, device):
    samples = []
    for i, (dilations, stride, k) in enumerate((([1], 1, 9), ([1, 2], 1, 5), ([1, 2, 3, 4], 2, 5), ([2, 1], 2, 3))):
        g = _generator(i)
        B, W = len(dilations), 3
        x = _randn(g, 2, B * W, 11, 4, dtype=dtype, device=device, grad=True)
        weight = _randn(g, B, W, W, k, dtype=dtype, device=device, grad=True)
        bias = _randn(g, B, W, dtype=dtype, device=device, grad=True)
        samples.append(Sample((x, weight, bias, dilations, stride), (0, 1, 2), f"d{dilations} s{stride} k{k}"))
    return samples


def _mstc_bad():
    x, w, b = torch.randn(2, 6, 9, 3), torch.randn(2, 3, 3, 5), torch.randn(2, 3)
    return [
        BadInput((x, w, b, [1], 1), "one dilation per branch expected"),
        BadInput((x, torch.randn(2, 3, 3, 4), b, [1, 2], 1), "an odd kernel size"),
        BadInput((torch.randn(2, 5, 9, 3), w, b, [1, 2], 1), r"x must have B \* W = 6 channels"),
        BadInput((x, w, b, [1, 0], 1), "dilations must be positive"),
        BadInput((x, w, b, [1, 2**40], 1), "dilations must be positive and below"),
        BadInput((x, w, b, [1, 2], 0), "stride must be positive"),
    ]


# --- vector_quantize: nearest_code, code_statistics, ema_codebook_update_ -------------------------


def _nearest_code_samples(dtype, device):
    samples = []
    for metric in ("euclidean", "cosine"):
        for N, K, D in ((1, 1, 1), (7, 3, 5), (300, 1500, 16), (129, 1025, 3)):
            g = _generator(N + K + D)
            x = _randn(g, N, D, dtype=dtype, device=device)
            codebook = _randn(g, K, D, dtype=dtype, device=device)
            samples.append(Sample((x, codebook, metric), (), f"{metric} N{N} K{K} D{D}"))
        g = _generator(11)
        x, codebook = _randn(g, 4, 3, dtype=dtype, device=device), _randn(g, 6, 3, dtype=dtype, device=device)
        x[1, 2] = float("nan")  # a NaN row: NaN from code 0, as the reference's min
        samples.append(Sample((x, codebook, metric), (), f"{metric} NaN row"))
        codebook = codebook.clone()
        codebook[4, 0] = float("nan")  # a NaN code: every row's minimum is NaN there
        samples.append(Sample((x, codebook, metric), (), f"{metric} NaN code"))
    return samples


def _compare_nearest_code(ours, theirs, sample, tolerance):
    """Distances equal; a chosen code is a nearest one (equally near codes may swap)."""
    (indices, distances), (ref_indices, ref_distances) = ours, theirs
    distances = distances.to(ref_distances.dtype)
    torch.testing.assert_close(distances, ref_distances, **tolerance, equal_nan=True)
    nan = torch.isnan(ref_distances)
    assert torch.equal(indices[nan], ref_indices[nan]), f"{sample.name}: NaN rows' codes"
    x, codebook, metric = (a.to(ref_distances.dtype) if isinstance(a, torch.Tensor) else a for a in sample.args)
    chosen = codebook[indices]
    own = (x - chosen).square().sum(1) if metric == "euclidean" else 1 - F.cosine_similarity(x, chosen, dim=1)
    torch.testing.assert_close(own[~nan], ref_distances[~nan], **tolerance)


def _nearest_code_bad():
    return [
        BadInput((torch.randn(3, 4), torch.randn(5, 3), "euclidean"), r"codebook must be \(K, D\) with D = 4"),
        BadInput((torch.randn(3, 4), torch.randn(5, 4), "manhattan"), "metric must be 'euclidean' or 'cosine'"),
        BadInput((torch.randn(3, 4), torch.randn(0, 4), "euclidean"), "the codebook has no code"),
    ]


def _code_statistics_samples(dtype, device):
    g = _generator(0)
    x = _randn(g, 500, 9, dtype=dtype, device=device)
    indices = torch.randint(0, 40, (500,), generator=g).to(device)
    empty = _randn(g, 0, 9, dtype=dtype, device=device)
    return [Sample((x, indices, 50), (), "500 x 9"), Sample((empty, indices[:0], 5), (), "empty")]


def _code_statistics_bad():
    return [
        BadInput((torch.randn(3, 4), torch.tensor([0, 9, 1]), 5), r"indices\[1\] = 9 is not a code in \[0, 5\)", True),
        BadInput((torch.randn(3, 4), torch.tensor([0, 1]), 5), r"indices must have one code per row of x \(3\), got 2"),
    ]


def _ema(op):
    """An in-place update as a function of copies of its state, returning the new state."""

    def call(codebook, cluster_size, embed_sum, counts, sums, decay, epsilon):
        state = [codebook.clone(), cluster_size.clone(), embed_sum.clone()]
        op(*state, counts, sums, decay, epsilon)
        return tuple(state)

    return call


def _ema_samples(dtype, device):
    g = _generator(3)
    args = (
        _randn(g, 20, 6, dtype=dtype, device=device),
        (torch.rand(20, dtype=dtype, generator=g) * 5).to(device),
        _randn(g, 20, 6, dtype=dtype, device=device),
        torch.randint(0, 4, (20,), generator=g).to(dtype).to(device),
        _randn(g, 20, 6, dtype=dtype, device=device),
        0.9,
        1e-5,
    )
    return [Sample(args, (), "20 codes x 6")]


def _ema_bad():
    state = lambda: (torch.randn(5, 4), torch.ones(5), torch.randn(5, 4))
    return [
        BadInput((*state(), torch.ones(5), torch.randn(5, 4), 1.0, 1e-5), "decay must be in"),
        BadInput((*state(), torch.ones(5), torch.randn(5, 3), 0.9, 1e-5), r"sums must be \(K, D\) = \(5, 4\)"),
    ]


# --- contrastive_alignment_loss, cross_modal_attention ------------------------------------------


def _contrastive_samples(dtype, device):
    samples = []
    for N, M, D in ((1, 1, 3), (5, 7, 4), (130, 1100, 16), (64, 512, 8)):
        g = _generator(N + M)
        skeleton, text = _unit(g, N, D, dtype=dtype, device=device), _unit(g, M, D, dtype=dtype, device=device)
        labels = torch.randint(0, M, (N,), generator=g).to(device)
        log_scale = torch.tensor([2.5], dtype=dtype, device=device, requires_grad=True)
        samples.append(Sample((skeleton, text, labels, log_scale), (0, 1, 3), f"N{N} M{M} D{D}"))
    return samples


def _contrastive_bad():
    s, t, log_scale = torch.randn(3, 4), torch.randn(5, 4), torch.zeros(1)
    return [
        BadInput((s, t, torch.tensor([0, 5, 1]), log_scale), r"labels\[1\] = 5 is not a text in \[0, 5\)", True),
        BadInput((s, torch.randn(5, 3), torch.tensor([0, 1, 1]), log_scale), r"text must be \(M, D\) with D = 4"),
        BadInput((s, t, torch.tensor([0, 1, 1]), torch.zeros(())), r"log_scale must be a tensor of shape \(1\)"),
    ]


def _contrastive_backward_args(sample):
    skeleton, text, labels, log_scale = (t.detach() if isinstance(t, torch.Tensor) else t for t in sample.args)
    _, logsumexp = torch.ops.skelang.contrastive_alignment_loss.default(skeleton, text, labels, log_scale)
    grad = torch.ones((), dtype=skeleton.dtype, device=skeleton.device)
    return (grad, skeleton, text, labels, log_scale, logsumexp)


def _cross_modal_samples(dtype, device):
    samples = []
    for B in (1, 3):
        for masked in (False, True):
            g = _generator(B + 2 * masked)
            query = _randn(g, 3, 5, 8, dtype=dtype, device=device, grad=True)
            key = _randn(g, B, 7, 8, dtype=dtype, device=device, grad=True)
            value = _randn(g, B, 7, 8, dtype=dtype, device=device, grad=True)
            mask = None
            if masked:
                mask = torch.rand(B, 7, generator=g) > 0.3
                mask[:, 0] = True  # every sample keeps a token
                mask = mask.to(device)
            samples.append(Sample((query, key, value, mask, 2), (0, 1, 2), f"B{B} {'masked' if masked else ''}"))
    return samples


def _cross_modal_bad():
    query, key, value = torch.randn(2, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    return [
        BadInput((query, torch.randn(3, 5, 4), torch.randn(3, 5, 4), None, 2), "key must hold tokens for 1 or N = 2"),
        BadInput((query, key, value, None, 3), "not divisible by 3 heads"),
        BadInput((query, key, value, torch.ones(1, 4, dtype=torch.bool), 2), r"key_mask must be \(B, Lk\) = \(1, 5\)"),
    ]


# --- lora_linear, dropout_mask ------------------------------------------------------------------


def _lora_inputs(g, shape, out, r, dtype, device, bias, masked):
    x = _randn(g, *shape, dtype=dtype, device=device, grad=True)
    weight = _randn(g, out, shape[-1], dtype=dtype, device=device)
    b = _randn(g, out, dtype=dtype, device=device) if bias else None
    A = _randn(g, r, shape[-1], dtype=dtype, device=device, grad=True)
    B = _randn(g, out, r, dtype=dtype, device=device, grad=True)
    keep = (torch.rand(*shape, generator=g) > 0.2).to(device)
    mask = {False: None, True: keep.to(dtype) / 0.8, "bool": keep}[masked]
    return (x, weight, b, A, B, 0.75, mask)


def _lora_samples(dtype, device):
    samples = []
    for i, shape in enumerate(((7,), (4, 7), (2, 5, 7), (3, 1, 2, 9), (0, 7), (3, 0))):
        for bias, masked in ((True, True), (False, False), (False, "bool")):
            g = _generator(i)
            args = _lora_inputs(g, shape, 6, 3, dtype, device, bias, masked)
            samples.append(Sample(args, (0, 3, 4), f"x{shape} bias {bias} mask {masked}"))
    return samples


def _lora_bad():
    x, weight, b, A, B, _, _ = (
        t.detach() if isinstance(t, torch.Tensor) else t
        for t in _lora_inputs(_generator(0), (2, 5, 7), 6, 3, torch.float64, "cpu", True, False)
    )
    return [
        BadInput((x, weight, b, A[:, :5], B, 1.0, None), r"lora_A must be \(r, in = 7\)"),
        BadInput((x, weight, b, A, B[:, :2], 1.0, None), r"lora_B must be \(out, r\) = \(6, 3\)"),
        BadInput((x, weight, b, A, B, 1.0, torch.ones(2, 7, dtype=torch.float64)), "mask must have x's shape"),
        BadInput(
            (x, weight, b, A, B, 1.0, torch.ones(x.shape, dtype=torch.int64)), "mask must be bool .* or x's dtype"
        ),
        BadInput((x, weight[:, :4], b, A, B, 1.0, None), r"weight must be \(out, in\) with in = 7"),
    ]


def _lora_backward_bad():
    x, weight, _, A, B, scaling, _ = (
        t.detach() if isinstance(t, torch.Tensor) else t
        for t in _lora_inputs(_generator(0), (2, 5, 7), 6, 3, torch.float64, "cpu", False, False)
    )
    grad_y, xa = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    return [
        BadInput((grad_y, x, weight, A, B, scaling, None, xa[..., 0]), r"xa must be \(\.\.\., r\) = \[2, 5, 3\]"),
        BadInput(
            (grad_y[..., :4], x, weight, A, B, scaling, None, xa), r"grad_y must be \(\.\.\., out\) = \[2, 5, 6\]"
        ),
    ]


def _contrastive_backward_bad():
    s, t = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    one, log_scale, lse = torch.ones((), dtype=torch.float64), torch.zeros(1, dtype=torch.float64), torch.zeros(3)
    return [
        BadInput((one, s, t, torch.tensor([0, 7, 1]), log_scale, lse.double()), r"labels\[1\] = 7 is not a text", True),
        BadInput((one, s, t, torch.tensor([0, 1, 1]), log_scale, lse[:2].double()), r"logsumexp must be \(N\)"),
    ]


def _lora_backward_args(sample):
    x, weight, bias, A, B, scaling, mask = (t.detach() if isinstance(t, torch.Tensor) else t for t in sample.args)
    y, xa = torch.ops.skelang.lora_linear.default(x, weight, bias, A, B, scaling, mask)
    grad_y = torch.randn(y.shape, dtype=y.dtype, generator=_generator(4)).to(y.device)
    return (grad_y, x, weight, A, B, scaling, mask, xa)


def _dropout_mask_samples(dtype, device):
    return [
        Sample((torch.empty(numel, dtype=dtype, device=device), p, seed), (), f"{numel} p{p} seed {seed}")
        for numel in (0, 1, 5, 4099)
        for p in (0.0, 0.05, 0.999)
        for seed in (0, 2**62 + 12345)
    ]


def _dropout_mask_bad():
    return [
        BadInput((torch.empty(3), 1.0, 0), r"p must be in \[0, 1\), got 1"),
        BadInput((torch.empty(3), 0.1, -1), "seed must be non-negative"),
    ]


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec(
            "graph_aggregate",
            ops.graph_aggregate,
            reference.graph_aggregate,
            _graph_aggregate_samples,
            _graph_aggregate_bad,
            tolerance={torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)},
            bench={
                "full": {"N": 64, "T": 64, "V": 25, "channels": [64, 128, 256], "topologies": list(TOPOLOGY_SHAPES)},
                "quick": {"N": 2, "T": 8, "V": 25, "channels": [8], "topologies": list(TOPOLOGY_SHAPES)},
            },
        ),
        OpSpec(
            "graph_aggregate_grad_topology",
            ops.graph_aggregate_grad_topology,
            reference.graph_aggregate_grad_topology,
            _grad_topology_samples,
            _grad_topology_bad,
        ),
        OpSpec(
            "composite_aggregate",
            ops.composite_aggregate,
            reference.composite_aggregate,
            _composite_samples,
            _composite_bad,
            backward="composite_aggregate_backward",
            backward_args=_composite_backward_args,
            bench={
                "full": {"N": 32, "K": 3, "T": 64, "V": 25, "channels": [64, 128, 256]},
                "quick": {"N": 2, "K": 3, "T": 8, "V": 25, "channels": [8]},
            },
        ),
        OpSpec(
            "axis_attention",
            # the op itself (forward chunk by chunk, fused on CUDA; backward recomputing the
            # probabilities); skelang.ops.axis_attention's training path is the next entry
            _plain_axis_attention,
            reference.axis_attention,
            _axis_attention_samples,
            _axis_attention_bad,
            backward="axis_attention_backward",
            backward_args=_axis_attention_backward_args,
            backward_bad_inputs=_axis_attention_backward_bad,
            bench={  # HGLNet on NW-UCLA: 64 channels over 52 frames, 256 over 13 (after two strides)
                "full": {"N": 16, "V": 20, "heads": 4, "shapes": [[64, 52], [256, 13]]},
                "quick": {"N": 2, "V": 20, "heads": 2, "shapes": [[8, 8]]},
            },
        ),
        OpSpec(
            "axis_attention_with_probs",
            ops.axis_attention_with_probs,
            reference.axis_attention_with_probs,
            _axis_attention_samples,
            _axis_attention_bad,
            backward="axis_attention_backward",
            backward_args=lambda sample: _axis_attention_backward_args(sample, probs=True),
            backward_bad_inputs=_axis_attention_backward_bad,
        ),
        OpSpec(
            "multiscale_temporal_conv",
            ops.multiscale_temporal_conv,
            reference.multiscale_temporal_conv,
            _mstc_samples,
            _mstc_bad,
        ),
        OpSpec(
            "nearest_code",
            ops.nearest_code,
            reference.nearest_code,
            _nearest_code_samples,
            _nearest_code_bad,
            compare=_compare_nearest_code,
            bench={
                "full": {"N": 32768, "dims": [64, 256], "codes": [512, 8192]},
                "quick": {"N": 256, "dims": [8], "codes": [16]},
            },
        ),
        OpSpec(
            "code_statistics",
            ops.code_statistics,
            reference.code_statistics,
            _code_statistics_samples,
            _code_statistics_bad,
        ),
        OpSpec(
            "ema_codebook_update_",
            _ema(ops.ema_codebook_update_),
            _ema(reference.ema_codebook_update_),
            _ema_samples,
            _ema_bad,
            compiles=False,  # mutates its inputs: checked by opcheck
        ),
        OpSpec(
            "contrastive_alignment_loss",
            ops.contrastive_alignment_loss,
            reference.contrastive_alignment_loss,
            _contrastive_samples,
            _contrastive_bad,
            backward="contrastive_alignment_loss_backward",
            backward_args=_contrastive_backward_args,
            backward_bad_inputs=_contrastive_backward_bad,
            tolerance={torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)},
            bench={
                "full": {"dim": 384, "shapes": [[256, 120], [4096, 120], [4096, 4096]]},
                "quick": {"dim": 8, "shapes": [[16, 5]]},
            },
        ),
        OpSpec(
            "cross_modal_attention",
            ops.cross_modal_attention,
            reference.cross_modal_attention,
            _cross_modal_samples,
            _cross_modal_bad,
            tolerance={torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-7)},
            bench={
                "full": {"N": 64, "steps": 16, "tokens": 3840, "dim": 256, "heads": 4},
                "quick": {"N": 2, "steps": 3, "tokens": 7, "dim": 8, "heads": 2},
            },
        ),
        OpSpec(
            "lora_linear",
            ops.lora_linear,
            reference.lora_linear,
            _lora_samples,
            _lora_bad,
            backward="lora_linear_backward",
            backward_args=_lora_backward_args,
            backward_bad_inputs=_lora_backward_bad,
            bench={  # SmolLM2-135M's projections (hidden 576, MLP 1536) and a 4096-hidden model, 4096 tokens
                "full": {
                    "dropout": 0.05,
                    "ranks": [8, 16, 64],
                    "shapes": [
                        {"name": "SmolLM2 q_proj", "tokens": 4096, "in": 576, "out": 576},
                        {"name": "SmolLM2 up_proj", "tokens": 4096, "in": 576, "out": 1536},
                        {"name": "SmolLM2 down_proj", "tokens": 4096, "in": 1536, "out": 576},
                        {"name": "4096-hidden", "tokens": 4096, "in": 4096, "out": 4096},
                    ],
                },
                "quick": {
                    "dropout": 0.05,
                    "ranks": [4, 8],
                    "shapes": [{"name": "tiny", "tokens": 32, "in": 16, "out": 24}],
                },
            },
            tolerance={torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-7)},
        ),
        OpSpec(
            "dropout_mask",
            ops.dropout_mask,
            reference.dropout_mask,
            _dropout_mask_samples,
            _dropout_mask_bad,
            tolerance={torch.float32: dict(rtol=0, atol=0), torch.float64: dict(rtol=0, atol=0)},
        ),
    )
}


def op_names() -> list[str]:
    """Every operator name registered under torch.ops.skelang (forward and backward ops)."""
    from skelang import _C

    return sorted(_C.registered_ops())


def covered_names() -> set[str]:
    """The op names the registry covers: its entries and their explicit backward ops."""
    return set(OPS) | {spec.backward for spec in OPS.values() if spec.backward}
