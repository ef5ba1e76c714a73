// lora_linear: a frozen linear layer with a LoRA branch, fused (LVLM-VAR's adapter).
//
//   x        (..., in)      input
//   weight   (out, in)      frozen base weight;  bias (out) or None, frozen
//   lora_A   (r, in)        lora_B (out, r)      the trainable low-rank factors
//   scaling  s              alpha / r (or alpha / sqrt(r) for rsLoRA)
//   mask     (..., in) or None: dropout on the LoRA branch's input, drawn outside the op so
//            the op itself is deterministic: bool (keep = true, 1 byte per element kept for
//            backward; the caller folds 1 / (1 - p) into s) or x's dtype (0 or 1 / (1 - p))
//   y        (..., out) = x W^T + b + s ((x * mask) A^T) B^T
//   xa       (..., r)   = (x * mask) A^T, returned for backward
//
// The LoRA branch is added into y by the matrix product itself (beta = 1), so no (..., out)
// temporary is made for it; backward needs x, the mask and xa only (never x * mask):
//   grad_x = g W + s ((g B) A) * mask,  grad_A = s (g B)^T (x * mask),  grad_B = s g^T xa.
// With a mask, x * mask and ((g B) A) * mask are made in row blocks of about 2 MiB, each used
// while it is in cache, and grad_x's g W is accumulated into the masked term by the product
// (beta = s): no (..., in) temporary besides grad_x itself.
// Written with ATen's matrix products, so the same code serves CPU (BLAS) and CUDA (cuBLAS).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace skelang {

std::tuple<at::Tensor, at::Tensor> lora_linear_forward(const at::Tensor& x,
                                                       const at::Tensor& weight,
                                                       const std::optional<at::Tensor>& bias,
                                                       const at::Tensor& lora_A,
                                                       const at::Tensor& lora_B, double scaling,
                                                       const std::optional<at::Tensor>& mask);

std::tuple<at::Tensor, at::Tensor, at::Tensor> lora_linear_backward_impl(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& lora_A, const at::Tensor& lora_B, double scaling,
    const std::optional<at::Tensor>& mask, const at::Tensor& xa);

}  // namespace skelang
