"""Every operator of the registry (skelang.ops.registry), table-driven: parity with its
reference (forward and every gradient) on each sample and dtype, float64 gradcheck,
torch.library.opcheck of the op and of its explicit backward op, torch.compile, its bad inputs
on CPU and on meta tensors, and CUDA parity where a GPU exists. Op-specific properties (tiles,
thread-count independence, what backward keeps) stay in the op's own test file."""

from __future__ import annotations

import pytest
import torch

from skelang.ops import autocast
from skelang.ops.registry import OPS, REDUCED_TOLERANCE, covered_names, op_names

FORWARD = sorted(OPS)
WITH_BACKWARD = sorted(name for name, spec in OPS.items() if spec.backward)
CASES = [(name, dtype) for name in FORWARD for dtype in OPS[name].dtypes]


def _as_tuple(output):
    return output if isinstance(output, tuple) else (output,)


def _compare(spec, ours, theirs, sample, tolerance):
    if spec.compare is not None:
        spec.compare(ours, theirs, sample, tolerance)
        return
    for a, b in zip(_as_tuple(ours), _as_tuple(theirs)):
        assert_close(a, b, tolerance)


def assert_close(ours, exact, tolerance, message=""):
    """Within `tolerance` of the reference; a reduced dtype's result against the float64 one."""
    if not ours.is_floating_point():  # indices, masks: exact
        assert torch.equal(ours, exact.to(ours.dtype)), message
    elif "scaled" in tolerance:
        assert ours.dtype == tolerance["dtype"], f"{message} {ours.dtype}"
        error = (ours.double() - exact.double()).abs().max().item() if exact.numel() else 0.0
        bound = tolerance["scaled"] * (exact.double().abs().max().item() + 1 if exact.numel() else 1)
        assert error <= bound, f"{message}: error {error:.3g} above {bound:.3g}"
    else:
        torch.testing.assert_close(ours, exact, **tolerance, msg=lambda m: f"{message}: {m}")


def reference_inputs(sample, dtype):
    """The sample's arguments for the reference: float64 copies of reduced-precision tensors."""
    if dtype not in REDUCED_TOLERANCE:
        return sample.args
    return tuple(
        a.detach().double().requires_grad_(a.requires_grad)
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in sample.args
    )


def tolerance_of(spec, dtype):
    if dtype in REDUCED_TOLERANCE:
        return {"scaled": REDUCED_TOLERANCE[dtype], "dtype": dtype}
    return spec.tolerance[dtype]


def test_every_registered_op_is_in_the_registry():
    assert covered_names() == set(op_names()), "ops registered with the dispatcher but missing from the registry"


@pytest.mark.parametrize("name,dtype", CASES, ids=[f"{n}-{str(d).removeprefix('torch.')}" for n, d in CASES])
def test_parity_with_the_reference(name, dtype):
    spec = OPS[name]
    tolerance = tolerance_of(spec, dtype)
    for sample in spec.samples(dtype, torch.device("cpu")):
        exact_args = reference_inputs(sample, dtype)
        ours, theirs = spec.op(*sample.args), spec.reference(*exact_args)
        if spec.compare is not None:
            spec.compare(ours, theirs, sample, spec.tolerance.get(dtype, {"rtol": 0.05, "atol": 0.05}))
        else:
            for a, b in zip(_as_tuple(ours), _as_tuple(theirs)):
                assert_close(a, b, tolerance, sample.name)
        if not sample.grads:
            continue
        out, ref = _as_tuple(ours)[0], _as_tuple(theirs)[0]
        if out.numel() == 0:
            continue
        grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        grads = torch.autograd.grad(out, [sample.args[i] for i in sample.grads], grad.to(out.dtype), allow_unused=True)
        grads_ref = torch.autograd.grad(
            ref, [exact_args[i] for i in sample.grads], grad.to(out.dtype).to(ref.dtype), allow_unused=True
        )
        for index, a, b in zip(sample.grads, grads, grads_ref):
            a = torch.zeros_like(sample.args[index]) if a is None else a
            b = torch.zeros_like(exact_args[index]) if b is None else b
            assert_close(a, b, tolerance, f"{sample.name}, grad {index}")


DIFFERENTIABLE = [name for name in FORWARD if OPS[name].samples(torch.float64, torch.device("cpu"))[0].grads]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_float64_gradcheck(name):
    spec = OPS[name]
    samples = [s for s in spec.samples(torch.float64, torch.device("cpu")) if s.grads]
    sample = min(samples[:3], key=lambda s: sum(t.numel() for t in s.args if isinstance(t, torch.Tensor)))
    args = list(sample.args)

    def function(*inputs):
        for index, value in zip(sample.grads, inputs):
            args[index] = value
        return _as_tuple(spec.op(*args))[0]

    assert torch.autograd.gradcheck(function, [sample.args[i] for i in sample.grads])


@pytest.mark.parametrize("name", FORWARD)
def test_opcheck(name):
    spec = OPS[name]
    for sample in spec.samples(torch.float64, torch.device("cpu"))[:2]:
        args = tuple(
            a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
            for a in sample.args
        )
        torch.library.opcheck(spec.overload, args)


@pytest.mark.parametrize("name", WITH_BACKWARD)
def test_opcheck_of_the_backward_op(name):
    spec = OPS[name]
    backward = getattr(torch.ops.skelang, spec.backward).default
    for sample in spec.samples(torch.float64, torch.device("cpu"))[:2]:
        torch.library.opcheck(backward, spec.backward_args(sample))


@pytest.mark.parametrize("name", [n for n in FORWARD if OPS[n].compiles])
def test_compiles(name):
    spec = OPS[name]
    sample = spec.samples(torch.float64, torch.device("cpu"))[0]
    compiled = torch.compile(spec.op, fullgraph=True, backend="aot_eager")
    _compare(spec, compiled(*sample.args), spec.reference(*sample.args), sample, spec.tolerance[torch.float64])


@pytest.mark.parametrize("name", FORWARD)
def test_bad_inputs_are_clear_errors(name):
    spec = OPS[name]
    for bad in spec.bad_inputs():
        with pytest.raises(RuntimeError, match=bad.message):
            spec.op(*bad.args)
        if bad.not_on_meta:
            continue
        meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in bad.args)
        with pytest.raises(RuntimeError, match=bad.message):  # the fake kernel checks the same
            spec.op(*meta)


@pytest.mark.parametrize("name", WITH_BACKWARD)
def test_bad_inputs_of_the_backward_op(name):
    spec = OPS[name]
    backward = getattr(torch.ops.skelang, spec.backward).default
    for bad in spec.backward_bad_inputs():
        with pytest.raises(RuntimeError, match=bad.message):
            backward(*bad.args)
        if not bad.not_on_meta:
            with pytest.raises(RuntimeError, match=bad.message):
                backward(*(a.to("meta") if isinstance(a, torch.Tensor) else a for a in bad.args))


CUDA_CASES = CASES + [(name, torch.float16) for name in FORWARD]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name,dtype", CUDA_CASES, ids=[f"{n}-{str(d).removeprefix('torch.')}" for n, d in CUDA_CASES])
def test_cuda_parity(name, dtype):
    """The CUDA kernels against the reference on the CPU (float64 for reduced precision)."""
    spec = OPS[name]
    tolerance = tolerance_of(spec, dtype)
    for sample in spec.samples(dtype, torch.device("cuda")):
        cpu = type(sample)(
            tuple(a.detach().cpu() if isinstance(a, torch.Tensor) else a for a in sample.args),
            sample.grads,
            sample.name,
        )
        ours = tuple(t.cpu() for t in _as_tuple(spec.op(*sample.args)))
        theirs = _as_tuple(spec.reference(*reference_inputs(cpu, dtype)))
        if spec.compare is not None:
            spec.compare(
                ours if len(ours) > 1 else ours[0],
                theirs if len(theirs) > 1 else theirs[0],
                cpu,
                spec.tolerance.get(dtype, {"rtol": 0.05, "atol": 0.05}),
            )
        else:
            for a, b in zip(ours, theirs):
                assert_close(a, b, tolerance, sample.name)


@pytest.mark.parametrize("name", [n for n in FORWARD if n in autocast.LOWER_PRECISION + autocast.FLOAT32])
def test_autocast(name):
    """Under torch.autocast on the CPU a float32 call runs in bfloat16 (products) or float32
    (comparisons and sums), and its gradients reach the float32 inputs in float32."""
    spec = OPS[name]
    sample = spec.samples(torch.float32, torch.device("cpu"))[0]
    expected = torch.bfloat16 if name in autocast.LOWER_PRECISION else torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _as_tuple(spec.op(*sample.args))
    floating = [t for t in out if t.is_floating_point()]
    assert all(t.dtype == expected for t in floating), [t.dtype for t in floating]
    if sample.grads and floating[0].numel():
        grads = torch.autograd.grad(
            floating[0].float().sum(), [sample.args[i] for i in sample.grads], allow_unused=True
        )
        assert all(g is None or g.dtype == torch.float32 for g in grads)
