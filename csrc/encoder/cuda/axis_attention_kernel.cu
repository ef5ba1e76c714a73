// CUDA kernels of axis_attention: ATen's attention forward (its fused kernels), the forward
// that keeps the probabilities, and the backward of axis_attention.cpp, on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "encoder/axis_attention.h"

namespace skelang {
namespace {

at::Tensor axis_attention_cuda(const at::Tensor& qkv, const at::Tensor& bias, int64_t heads,
                               int64_t axis) {
  const c10::cuda::CUDAGuard guard(qkv.device());
  return axis_attention_aten(qkv, bias, heads, axis);
}

std::tuple<at::Tensor, at::Tensor> axis_attention_with_probs_cuda(const at::Tensor& qkv,
                                                                  const at::Tensor& bias,
                                                                  int64_t heads, int64_t axis) {
  const c10::cuda::CUDAGuard guard(qkv.device());
  return axis_attention_with_probs_aten(qkv, bias, heads, axis);
}

std::tuple<at::Tensor, at::Tensor> axis_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& bias,
    const std::optional<at::Tensor>& probs, int64_t heads, int64_t axis) {
  const c10::cuda::CUDAGuard guard(qkv.device());
  return axis_attention_backward_aten(grad_out, qkv, bias, probs, heads, axis);
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CUDA, m) {
  m.impl("axis_attention", &axis_attention_cuda);
  m.impl("axis_attention_with_probs", &axis_attention_with_probs_cuda);
  m.impl("axis_attention_backward", &axis_attention_backward_cuda);
}

}  // namespace skelang
