// composite_aggregate's work on a chunk of samples, written with ATen's batched matrix
// products so the same code serves the CPU kernel (one sample per thread) and the CUDA
// kernel (chunks of samples). See composite_aggregate.h for the shapes.
#include "encoder/composite_aggregate.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/tanh.h>

#include "common/checks.h"

namespace skelang {

CompositeAggregateInputs composite_aggregate_inputs(const char* op, const at::Tensor& x,
                                                    const at::Tensor& phi, const at::Tensor& psi,
                                                    const at::Tensor& weight,
                                                    const at::Tensor& bias, const at::Tensor& alpha,
                                                    const at::Tensor& topology) {
  check_rank(op, "x", x, 5, "(N, K, C, T, V)");
  check_rank(op, "phi", phi, 4, "(N, K, R, V)");
  check_rank(op, "psi", psi, 4, "(N, K, R, V)");
  check_rank(op, "weight", weight, 3, "(K, C, R)");
  check_rank(op, "bias", bias, 2, "(K, C)");
  check_rank(op, "alpha", alpha, 1, "(1)");
  check_rank(op, "topology", topology, 3, "(K, V, V)");
  check_floating(op, "x", x);
  check_same_dtype_and_device(op, "x", x,
                              {{"phi", phi},
                               {"psi", psi},
                               {"weight", weight},
                               {"bias", bias},
                               {"alpha", alpha},
                               {"topology", topology}});
  const int64_t N = x.size(0), K = x.size(1), C = x.size(2), V = x.size(4);
  const int64_t R = phi.size(2);
  TORCH_CHECK(phi.sizes() == at::IntArrayRef({N, K, R, V}), op, ": phi must be (N, K, R, V) = (", N,
              ", ", K, ", R, ", V, ") for x of shape ", x.sizes(), ", got ", phi.sizes());
  TORCH_CHECK(psi.sizes() == phi.sizes(), op, ": psi must have phi's shape ", phi.sizes(), ", got ",
              psi.sizes());
  TORCH_CHECK(weight.sizes() == at::IntArrayRef({K, C, R}), op, ": weight must be (K, C, R) = (", K,
              ", ", C, ", ", R, "), got ", weight.sizes());
  TORCH_CHECK(bias.sizes() == at::IntArrayRef({K, C}), op, ": bias must be (K, C) = (", K, ", ", C,
              "), got ", bias.sizes());
  TORCH_CHECK(alpha.numel() == 1, op, ": alpha must hold one value, got shape ", alpha.sizes());
  TORCH_CHECK(topology.sizes() == at::IntArrayRef({K, V, V}), op,
              ": topology must be (K, V, V) = (", K, ", ", V, ", ", V, "), got ", topology.sizes());
  return {x.contiguous(),    phi.contiguous(),   psi.contiguous(),     weight.contiguous(),
          bias.contiguous(), alpha.contiguous(), topology.contiguous()};
}

namespace {

// rel (B, K, R, V, V) = tanh(phi_u - psi_v) and the topology A (B, K, C, V, V) of samples
// [n0, n1).
std::pair<at::Tensor, at::Tensor> composite_topology(const CompositeAggregateInputs& in, int64_t n0,
                                                     int64_t n1) {
  const int64_t B = n1 - n0, K = in.x.size(1), C = in.x.size(2), V = in.x.size(4);
  const int64_t R = in.phi.size(2);
  at::Tensor rel =
      at::tanh(in.phi.slice(0, n0, n1).unsqueeze(-1) - in.psi.slice(0, n0, n1).unsqueeze(-2));
  at::Tensor A = at::matmul(in.weight, rel.view({B, K, R, V * V}));  // (B, K, C, V * V)
  A.add_(in.bias.unsqueeze(-1)).mul_(in.alpha).add_(in.topology.view({K, 1, V * V}));
  return {rel, A.view({B, K, C, V, V})};
}

// out = a @ b for 3-D batches, written in place when `out` is contiguous.
void bmm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  if (out.is_contiguous()) {
    at::Tensor out3 = out.view({a.size(0), a.size(1), b.size(2)});
    at::bmm_out(out3, a, b);
  } else {
    out.copy_(at::bmm(a, b).view(out.sizes()));
  }
}

}  // namespace

at::Tensor composite_aggregate_grad_y(const CompositeAggregateInputs& in,
                                      const at::Tensor& grad_y) {
  const auto& x = in.x;
  TORCH_CHECK(
      grad_y.sizes() == at::IntArrayRef({x.size(0), x.size(2), x.size(3), x.size(4)}),
      "skelang::composite_aggregate_backward: grad_y must be (N, C, T, V) like the output, got ",
      grad_y.sizes());
  return grad_y.contiguous();
}

at::Tensor composite_aggregate_output(const CompositeAggregateInputs& in) {
  const auto& x = in.x;
  const std::vector<int64_t> shape{x.size(0), x.size(2), x.size(3), x.size(4)};
  // the partitions' sum; with no partition nothing is accumulated into it: zeros
  return x.size(1) == 0 ? at::zeros(shape, x.options()) : at::empty(shape, x.options());
}

void composite_aggregate_forward_chunk(const CompositeAggregateInputs& in, int64_t n0, int64_t n1,
                                       at::Tensor& y) {
  const int64_t B = n1 - n0, K = in.x.size(1), C = in.x.size(2), T = in.x.size(3), V = in.x.size(4);
  auto [rel, A] = composite_topology(in, n0, n1);
  at::Tensor y_chunk = y.slice(0, n0, n1).view({B * C, T, V});  // y is contiguous
  for (int64_t k = 0; k < K; ++k) {
    const at::Tensor x_k = in.x.slice(0, n0, n1).select(1, k).reshape({B * C, T, V});
    const at::Tensor At_k = A.select(1, k).reshape({B * C, V, V}).transpose(1, 2);
    // y[t,u] (+)= sum_v x[t,v] A[u,v]; beta 0 ignores y's uninitialised values
    y_chunk.baddbmm_(x_k, At_k, /*beta=*/k == 0 ? 0 : 1, /*alpha=*/1);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, CompositeAggregatePartials>
composite_aggregate_grad_buffers(const CompositeAggregateInputs& in,
                                 std::optional<at::ScalarType> small_dtype) {
  const int64_t N = in.x.size(0), K = in.x.size(1), C = in.x.size(2), V = in.x.size(4);
  const int64_t R = in.phi.size(2);
  const auto options = in.x.options().dtype(small_dtype.value_or(in.x.scalar_type()));
  return {
      at::empty(in.x.sizes(), in.x.options()), at::empty(in.phi.sizes(), options),
      at::empty(in.psi.sizes(), options),
      CompositeAggregatePartials{at::empty({N, K, C, R}, options), at::empty({N, K, C}, options),
                                 at::empty({N, K, V, V}, options)}};
}

void composite_aggregate_backward_chunk(const CompositeAggregateInputs& in,
                                        const at::Tensor& grad_y, int64_t n0, int64_t n1,
                                        at::Tensor& grad_x, at::Tensor& grad_phi,
                                        at::Tensor& grad_psi,
                                        CompositeAggregatePartials& partials) {
  const int64_t B = n1 - n0, K = in.x.size(1), C = in.x.size(2), T = in.x.size(3), V = in.x.size(4);
  const int64_t R = in.phi.size(2);
  auto [rel, A] = composite_topology(in, n0, n1);
  const at::Tensor gy = grad_y.slice(0, n0, n1).reshape({B * C, T, V});
  at::Tensor dA = at::empty({B, K, C, V, V}, A.options());  // the chunk's topology gradient
  for (int64_t k = 0; k < K; ++k) {
    const at::Tensor x_k = in.x.slice(0, n0, n1).select(1, k).reshape({B * C, T, V});
    // grad_x[t,v] = sum_u grad_y[t,u] A[u,v];  dA[u,v] = sum_t grad_y[t,u] x[t,v]
    bmm_into(grad_x.slice(0, n0, n1).select(1, k), gy, A.select(1, k).reshape({B * C, V, V}));
    bmm_into(dA.select(1, k), gy.transpose(1, 2), x_k);
  }
  const at::Tensor dA_flat = dA.view({B, K, C, V * V});
  const at::Tensor rel_flat = rel.view({B, K, R, V * V});
  partials.topology.slice(0, n0, n1).copy_(dA.sum(2));
  partials.bias.slice(0, n0, n1).copy_(dA_flat.sum(-1));
  partials.weight.slice(0, n0, n1).copy_(at::matmul(dA_flat, rel_flat.transpose(-1, -2)));
  // through tanh: d(phi_u - psi_v) = alpha (weight^T dA) (1 - rel^2)
  at::Tensor d_pre = at::matmul(in.weight.transpose(-1, -2), dA_flat);  // (B, K, R, V * V)
  d_pre.mul_(in.alpha).mul_(1 - rel_flat * rel_flat);
  d_pre = d_pre.view({B, K, R, V, V});
  grad_phi.slice(0, n0, n1).copy_(d_pre.sum(-1));
  grad_psi.slice(0, n0, n1).copy_(d_pre.sum(-2).neg_());
}

CompositeAggregateGrads composite_aggregate_finish_backward(
    const CompositeAggregateInputs& in, at::Tensor grad_x, at::Tensor grad_phi, at::Tensor grad_psi,
    const CompositeAggregatePartials& partials) {
  const at::Tensor weight_sum = partials.weight.sum(0);  // (K, C, R)
  const at::Tensor bias_sum = partials.bias.sum(0);      // (K, C)
  at::Tensor grad_alpha = ((in.weight * weight_sum).sum() + (in.bias * bias_sum).sum()).view({1});
  return {grad_x,
          grad_phi,
          grad_psi,
          weight_sum * in.alpha,
          bias_sum * in.alpha,
          grad_alpha,
          partials.topology.sum(0)};
}

}  // namespace skelang
