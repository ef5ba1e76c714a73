// composite_aggregate: LSE's graph convolution on the composite topology (CTR-GCN's CTR-GC),
// summed over the K partitions of the skeleton graph, without materialising the per-sample,
// per-channel topology (N, K, C, V, V) in forward or backward.
//
//   x         (N, K, C, T, V)  features projected for each partition k
//   phi, psi  (N, K, R, V)     the two relation projections of the time-pooled input
//   weight    (K, C, R)        the 1x1 convolution that expands relations to channels
//   bias      (K, C)           its bias
//   alpha     (1)              the refinement's scale (starts at 0 in CTR-GCN)
//   topology  (K, V, V)        physical + learned shared topology
//   y         (N, C, T, V)     y[n,c,t,u] = sum_k sum_v A[n,k,c,u,v] x[n,k,c,t,v], where
//     A[n,k,c,u,v] = topology[k,u,v]
//                    + alpha (bias[k,c] + sum_r weight[k,c,r] tanh(phi[n,k,r,u] - psi[n,k,r,v]))
//
// The topology of a few samples at a time is built in a scratch buffer and used at once:
// one sample per thread on CPU, as many as fit a fixed budget on CUDA. Backward recomputes
// it and saves nothing but the inputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace skelang {

struct CompositeAggregateInputs {
  at::Tensor x, phi, psi, weight, bias, alpha, topology;  // contiguous, checked
};

using CompositeAggregateGrads =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Checks shapes, dtypes and devices (naming the op and the tensor) and makes every input
// contiguous.
CompositeAggregateInputs composite_aggregate_inputs(const char* op, const at::Tensor& x,
                                                    const at::Tensor& phi, const at::Tensor& psi,
                                                    const at::Tensor& weight,
                                                    const at::Tensor& bias, const at::Tensor& alpha,
                                                    const at::Tensor& topology);

// Per-sample partial sums of the parameter gradients, added over samples at the end (in a
// fixed order: the result does not depend on how samples were split into chunks).
struct CompositeAggregatePartials {
  at::Tensor weight;    // (N, K, C, R)  sum_uv dA[u,v] rel[r,u,v]
  at::Tensor bias;      // (N, K, C)     sum_uv dA[u,v]
  at::Tensor topology;  // (N, K, V, V)  sum_c dA[c,u,v]
};

// The work of samples [n0, n1): writes y[n0:n1] (N, C, T, V).
void composite_aggregate_forward_chunk(const CompositeAggregateInputs& in, int64_t n0, int64_t n1,
                                       at::Tensor& y);

// The work of samples [n0, n1) in backward: writes grad_x, grad_phi, grad_psi and the
// partials of those samples.
void composite_aggregate_backward_chunk(const CompositeAggregateInputs& in,
                                        const at::Tensor& grad_y, int64_t n0, int64_t n1,
                                        at::Tensor& grad_x, at::Tensor& grad_phi,
                                        at::Tensor& grad_psi, CompositeAggregatePartials& partials);

// grad_y checked to be (N, C, T, V) like the output, made contiguous.
at::Tensor composite_aggregate_grad_y(const CompositeAggregateInputs& in, const at::Tensor& grad_y);

// Empty outputs of the right shapes.
at::Tensor composite_aggregate_output(const CompositeAggregateInputs& in);
// grad_x in x's dtype; grad_phi, grad_psi and the partial sums in `small_dtype` (default: x's).
std::tuple<at::Tensor, at::Tensor, at::Tensor, CompositeAggregatePartials>
composite_aggregate_grad_buffers(const CompositeAggregateInputs& in,
                                 std::optional<at::ScalarType> small_dtype = std::nullopt);

// grad_x, grad_phi, grad_psi, grad_weight, grad_bias, grad_alpha, grad_topology from the
// per-sample partials.
CompositeAggregateGrads composite_aggregate_finish_backward(
    const CompositeAggregateInputs& in, at::Tensor grad_x, at::Tensor grad_phi, at::Tensor grad_psi,
    const CompositeAggregatePartials& partials);

}  // namespace skelang
