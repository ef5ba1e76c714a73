// CPU kernel of composite_aggregate (float32, float64): one sample per thread, its topology
// built in a scratch buffer the size of one sample's (K, C, V, V) and used at once.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/reduced_precision.h"
#include "encoder/composite_aggregate.h"

namespace skelang {
namespace {

at::Tensor composite_aggregate_cpu(const at::Tensor& x, const at::Tensor& phi,
                                   const at::Tensor& psi, const at::Tensor& weight,
                                   const at::Tensor& bias, const at::Tensor& alpha,
                                   const at::Tensor& topology) {
  const auto in = composite_aggregate_inputs("skelang::composite_aggregate", x, phi, psi, weight,
                                             bias, alpha, topology);
  if (is_reduced_float(x))  // the partitions' and samples' sums in float32
    return composite_aggregate_cpu(as_float32(x), as_float32(phi), as_float32(psi),
                                   as_float32(weight), as_float32(bias), as_float32(alpha),
                                   as_float32(topology))
        .to(x.scalar_type());
  at::Tensor y = composite_aggregate_output(in);
  at::parallel_for(0, in.x.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) composite_aggregate_forward_chunk(in, n, n + 1, y);
  });
  return y;
}

CompositeAggregateGrads composite_aggregate_backward_cpu(
    const at::Tensor& grad_y_in, const at::Tensor& x, const at::Tensor& phi, const at::Tensor& psi,
    const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& alpha,
    const at::Tensor& topology) {
  const auto in = composite_aggregate_inputs("skelang::composite_aggregate_backward", x, phi, psi,
                                             weight, bias, alpha, topology);
  if (is_reduced_float(x))
    return to_dtype(
        composite_aggregate_backward_cpu(as_float32(grad_y_in), as_float32(x), as_float32(phi),
                                         as_float32(psi), as_float32(weight), as_float32(bias),
                                         as_float32(alpha), as_float32(topology)),
        x.scalar_type());
  const at::Tensor grad_y = composite_aggregate_grad_y(in, grad_y_in);
  auto [grad_x, grad_phi, grad_psi, partials] = composite_aggregate_grad_buffers(in);
  at::parallel_for(0, in.x.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      composite_aggregate_backward_chunk(in, grad_y, n, n + 1, grad_x, grad_phi, grad_psi,
                                         partials);
  });
  return composite_aggregate_finish_backward(in, grad_x, grad_phi, grad_psi, partials);
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CPU, m) {
  m.impl("composite_aggregate", &composite_aggregate_cpu);
  m.impl("composite_aggregate_backward", &composite_aggregate_backward_cpu);
}

}  // namespace skelang
