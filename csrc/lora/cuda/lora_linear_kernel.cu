// CUDA kernels of lora_linear (float32, float64, and half types through cuBLAS): the same
// ATen matrix products as on CPU, on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "lora/lora_linear.h"

namespace skelang {
namespace {

std::tuple<at::Tensor, at::Tensor> lora_linear_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                    const std::optional<at::Tensor>& bias,
                                                    const at::Tensor& lora_A,
                                                    const at::Tensor& lora_B, double scaling,
                                                    const std::optional<at::Tensor>& mask) {
  const c10::cuda::CUDAGuard guard(x.device());
  return lora_linear_forward(x, weight, bias, lora_A, lora_B, scaling, mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lora_linear_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& lora_A, const at::Tensor& lora_B, double scaling,
    const std::optional<at::Tensor>& mask, const at::Tensor& xa) {
  const c10::cuda::CUDAGuard guard(x.device());
  return lora_linear_backward_impl(grad_y, x, weight, lora_A, lora_B, scaling, mask, xa);
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CUDA, m) {
  m.impl("lora_linear", &lora_linear_cuda);
  m.impl("lora_linear_backward", &lora_linear_backward_cuda);
}

}  // namespace skelang
