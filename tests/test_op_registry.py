"""Every operator of the registry (skelang.ops.registry), table-driven: parity with its
reference (forward and every gradient) on each sample and dtype, float64 gradcheck,
torch.library.opcheck of the op and of its explicit backward op, torch.compile, its bad inputs
on CPU and on meta tensors, and CUDA parity where a GPU exists. Op-specific properties (tiles,
thread-count independence, what backward keeps) stay in the op's own test file."""

from __future__ import annotations

import pytest
import torch

from skelang.ops.registry import OPS, covered_names, op_names

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
        torch.testing.assert_close(a, b, **tolerance)


def test_every_registered_op_is_in_the_registry():
    assert covered_names() == set(op_names()), "ops registered with the dispatcher but missing from the registry"


@pytest.mark.parametrize("name,dtype", CASES, ids=[f"{n}-{str(d).removeprefix('torch.')}" for n, d in CASES])
def test_parity_with_the_reference(name, dtype):
    spec = OPS[name]
    tolerance = spec.tolerance[dtype]
    for sample in spec.samples(dtype, torch.device("cpu")):
        ours, theirs = spec.op(*sample.args), spec.reference(*sample.args)
        _compare(spec, ours, theirs, sample, tolerance)
        if not sample.grads:
            continue
        inputs = [sample.args[i] for i in sample.grads]
        out, ref = _as_tuple(ours)[0], _as_tuple(theirs)[0]
        if out.numel() == 0:
            continue
        grad = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(7))
        grads = torch.autograd.grad(out, inputs, grad, allow_unused=True)
        grads_ref = torch.autograd.grad(ref, inputs, grad, allow_unused=True)
        for index, a, b in zip(sample.grads, grads, grads_ref):
            a = torch.zeros_like(sample.args[index]) if a is None else a
            b = torch.zeros_like(sample.args[index]) if b is None else b
            torch.testing.assert_close(a, b, **tolerance, msg=lambda m, s=sample, i=index: f"{s.name}, grad {i}: {m}")


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
        if bad.needs_values:
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
        if not bad.needs_values:
            with pytest.raises(RuntimeError, match=bad.message):
                backward(*(a.to("meta") if isinstance(a, torch.Tensor) else a for a in bad.args))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name,dtype", CASES, ids=[f"{n}-{str(d).removeprefix('torch.')}" for n, d in CASES])
def test_cuda_parity(name, dtype):
    spec = OPS[name]
    for sample in spec.samples(dtype, torch.device("cuda")):
        _compare(spec, spec.op(*sample.args), spec.reference(*sample.args), sample, spec.tolerance[dtype])
