// CPU kernel of composite_aggregate: one sample per thread, its topology built in a scratch
// buffer the size of one sample's (K, C, V, V) and used at once. float32 and float64 are
// computed as they are; bfloat16 in float32, one sample at a time: each thread converts its
// sample's x (and grad_y) into float32 buffers of one sample's size, reused from sample to
// sample, and writes its results back in bfloat16, so that no float32 copy of the whole batch
// is made (the same float32 arithmetic, sample by sample, as a float32 call on converted
// inputs).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/reduced_precision.h"
#include "encoder/composite_aggregate.h"

namespace skelang {
namespace {

// One sample's inputs at a time: x converted into a float32 buffer of one sample's size
// (the calling thread's own, reused), the other inputs float32 views of that sample.
class SampleInputs {
 public:
  SampleInputs(const CompositeAggregateInputs& whole, const at::Tensor& x_buffer)
      : whole_(whole), x_(x_buffer) {}

  const CompositeAggregateInputs& sample(const at::Tensor& x_reduced, int64_t n) {
    x_.copy_(x_reduced.slice(0, n, n + 1));
    current_ = {x_,
                whole_.phi.slice(0, n, n + 1),
                whole_.psi.slice(0, n, n + 1),
                whole_.weight,
                whole_.bias,
                whole_.alpha,
                whole_.topology};
    return current_;
  }

 private:
  const CompositeAggregateInputs& whole_;  // phi, psi, weight, bias, alpha, topology in float32
  at::Tensor x_;
  CompositeAggregateInputs current_;
};

// The small inputs in float32; x stays in its reduced dtype.
CompositeAggregateInputs float32_parameters(const CompositeAggregateInputs& in) {
  return {in.x,
          as_float32(in.phi),
          as_float32(in.psi),
          as_float32(in.weight),
          as_float32(in.bias),
          as_float32(in.alpha),
          as_float32(in.topology)};
}

at::Tensor one_sample_buffer(const at::Tensor& t) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[0] = 1;
  return at::empty(shape, t.options().dtype(at::kFloat));
}

at::Tensor composite_aggregate_reduced(const CompositeAggregateInputs& in) {
  const CompositeAggregateInputs whole = float32_parameters(in);
  at::Tensor y = composite_aggregate_output(in);  // zeros when there is no partition
  if (in.x.size(1) == 0) return y;
  at::parallel_for(0, in.x.size(0), 1, [&](int64_t begin, int64_t end) {
    SampleInputs one(whole, one_sample_buffer(in.x));
    at::Tensor y_n = one_sample_buffer(y);
    for (int64_t n = begin; n < end; ++n) {
      composite_aggregate_forward_chunk(one.sample(in.x, n), 0, 1, y_n);
      y.slice(0, n, n + 1).copy_(y_n);
    }
  });
  return y;
}

CompositeAggregateGrads composite_aggregate_backward_reduced(const CompositeAggregateInputs& in,
                                                             const at::Tensor& grad_y_in) {
  const CompositeAggregateInputs whole = float32_parameters(in);
  const at::Tensor grad_y = composite_aggregate_grad_y(in, grad_y_in);
  // grad_x in the input's dtype; the small gradients and the partial sums in float32
  auto [grad_x, grad_phi, grad_psi, partials] = composite_aggregate_grad_buffers(in, at::kFloat);
  at::parallel_for(0, in.x.size(0), 1, [&](int64_t begin, int64_t end) {
    SampleInputs one(whole, one_sample_buffer(in.x));
    at::Tensor grad_y_n = one_sample_buffer(grad_y), grad_x_n = one_sample_buffer(in.x);
    for (int64_t n = begin; n < end; ++n) {
      const auto sample = [n](const at::Tensor& t) { return t.slice(0, n, n + 1); };
      grad_y_n.copy_(sample(grad_y));
      at::Tensor grad_phi_n = sample(grad_phi), grad_psi_n = sample(grad_psi);
      CompositeAggregatePartials partials_n{sample(partials.weight), sample(partials.bias),
                                            sample(partials.topology)};
      composite_aggregate_backward_chunk(one.sample(in.x, n), grad_y_n, 0, 1, grad_x_n, grad_phi_n,
                                         grad_psi_n, partials_n);
      sample(grad_x).copy_(grad_x_n);
    }
  });
  return to_dtype(composite_aggregate_finish_backward(whole, grad_x, grad_phi, grad_psi, partials),
                  in.x.scalar_type());
}

at::Tensor composite_aggregate_cpu(const at::Tensor& x, const at::Tensor& phi,
                                   const at::Tensor& psi, const at::Tensor& weight,
                                   const at::Tensor& bias, const at::Tensor& alpha,
                                   const at::Tensor& topology) {
  const auto in = composite_aggregate_inputs("skelang::composite_aggregate", x, phi, psi, weight,
                                             bias, alpha, topology);
  if (is_reduced_float(x)) return composite_aggregate_reduced(in);
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
  if (is_reduced_float(x)) return composite_aggregate_backward_reduced(in, grad_y_in);
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
