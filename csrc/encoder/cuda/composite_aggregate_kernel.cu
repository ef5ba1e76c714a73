// CUDA kernel of composite_aggregate (float32, float64): the samples are processed in chunks
// whose topology scratch (B, K, C, V, V) stays under a fixed budget, each chunk with cuBLAS's
// batched matrix products on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "common/reduced_precision.h"
#include "encoder/composite_aggregate.h"

namespace skelang {
namespace {

constexpr int64_t kScratchBytes = int64_t(256) << 20;

int64_t samples_per_chunk(const CompositeAggregateInputs& in) {
  const int64_t per_sample = in.x.size(1) * in.x.size(2) * in.x.size(4) * in.x.size(4) *
                             int64_t(in.x.element_size()) * 2;  // A and its gradient
  return std::max<int64_t>(1, kScratchBytes / std::max<int64_t>(1, per_sample));
}

at::Tensor composite_aggregate_cuda(const at::Tensor& x, const at::Tensor& phi,
                                    const at::Tensor& psi, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& alpha,
                                    const at::Tensor& topology) {
  const auto in = composite_aggregate_inputs("skelang::composite_aggregate", x, phi, psi, weight,
                                             bias, alpha, topology);
  if (is_reduced_float(x))  // the partitions' and samples' sums in float32
    return composite_aggregate_cuda(as_float32(x), as_float32(phi), as_float32(psi),
                                    as_float32(weight), as_float32(bias), as_float32(alpha),
                                    as_float32(topology))
        .to(x.scalar_type());
  const c10::cuda::CUDAGuard guard(in.x.device());
  at::Tensor y = composite_aggregate_output(in);
  const int64_t N = in.x.size(0), chunk = samples_per_chunk(in);
  for (int64_t n0 = 0; n0 < N; n0 += chunk)
    composite_aggregate_forward_chunk(in, n0, std::min(N, n0 + chunk), y);
  return y;
}

CompositeAggregateGrads composite_aggregate_backward_cuda(
    const at::Tensor& grad_y_in, const at::Tensor& x, const at::Tensor& phi, const at::Tensor& psi,
    const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& alpha,
    const at::Tensor& topology) {
  const auto in = composite_aggregate_inputs("skelang::composite_aggregate_backward", x, phi, psi,
                                             weight, bias, alpha, topology);
  if (is_reduced_float(x))
    return to_dtype(
        composite_aggregate_backward_cuda(as_float32(grad_y_in), as_float32(x), as_float32(phi),
                                          as_float32(psi), as_float32(weight), as_float32(bias),
                                          as_float32(alpha), as_float32(topology)),
        x.scalar_type());
  const c10::cuda::CUDAGuard guard(in.x.device());
  const at::Tensor grad_y = composite_aggregate_grad_y(in, grad_y_in);
  auto [grad_x, grad_phi, grad_psi, partials] = composite_aggregate_grad_buffers(in);
  const int64_t N = in.x.size(0), chunk = samples_per_chunk(in);
  for (int64_t n0 = 0; n0 < N; n0 += chunk)
    composite_aggregate_backward_chunk(in, grad_y, n0, std::min(N, n0 + chunk), grad_x, grad_phi,
                                       grad_psi, partials);
  return composite_aggregate_finish_backward(in, grad_x, grad_phi, grad_psi, partials);
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CUDA, m) {
  m.impl("composite_aggregate", &composite_aggregate_cuda);
  m.impl("composite_aggregate_backward", &composite_aggregate_backward_cuda);
}

}  // namespace skelang
