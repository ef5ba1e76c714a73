// multiscale_temporal_conv: LTC's dilated temporal convolutions, one per branch, over the
// branches' reduced features stacked on the channel axis, in one call.
//
//   x          (N, B * W, T, V)   the B branches' inputs, W channels each
//   weight     (B, W, W, k)       branch b's (k x 1) kernel, k odd
//   bias       (B, W)
//   dilations  B values
//   out        (N, B * W, T', V)  T' = (T - 1) / stride + 1, "same" padding per dilation
//
// Registered as CompositeImplicitAutograd over ATen's convolution (oneDNN on CPU, cuDNN on
// CUDA), which runs these shapes at matrix-product speed on this machine (measured): the op
// saves Python's per-branch slicing and concatenation bookkeeping, not FLOPs.
#include <ATen/ops/cat.h>
#include <ATen/ops/conv2d.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"

namespace skelang {
namespace {

at::Tensor multiscale_temporal_conv(const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& bias, at::IntArrayRef dilations,
                                    int64_t stride) {
  constexpr const char* op = "skelang::multiscale_temporal_conv";
  check_rank(op, "x", x, 4, "(N, B * W, T, V)");
  check_rank(op, "weight", weight, 4, "(B, W, W, k)");
  check_rank(op, "bias", bias, 2, "(B, W)");
  check_floating(op, "x", x);
  check_same_dtype_and_device(op, "x", x, {{"weight", weight}, {"bias", bias}});
  const int64_t B = weight.size(0), W = weight.size(1), k = weight.size(3);
  TORCH_CHECK(weight.size(2) == W && k % 2 == 1, op,
              ": weight must be (B, W, W, k) with an odd kernel size k, got ", weight.sizes());
  TORCH_CHECK(x.size(1) == B * W, op, ": x must have B * W = ", B * W, " channels for weight ",
              weight.sizes(), ", got x of shape ", x.sizes());
  TORCH_CHECK(bias.sizes() == at::IntArrayRef({B, W}), op, ": bias must be (B, W) = (", B, ", ", W,
              "), got ", bias.sizes());
  TORCH_CHECK(int64_t(dilations.size()) == B, op, ": one dilation per branch expected (", B,
              "), got ", dilations.size());
  TORCH_CHECK(stride >= 1, op, ": stride must be positive, got ", stride);
  std::vector<at::Tensor> branches;
  branches.reserve(B);
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(dilations[b] >= 1, op, ": dilations must be positive, got ", dilations);
    // the dilated kernel's span (k - 1) d + 1 is a frame count: it stays far below int32
    TORCH_CHECK(dilations[b] <= (1 << 30) / std::max<int64_t>(k - 1, 1), op,
                ": dilations must be positive and below 2^30 / (k - 1), got ", dilations);
    const int64_t padding = (k - 1) * dilations[b] / 2;
    branches.push_back(at::conv2d(x.narrow(1, b * W, W), weight[b].unsqueeze(-1), bias[b],
                                  {stride, 1}, {padding, 0}, {dilations[b], 1}));
  }
  return B == 1 ? branches[0] : at::cat(branches, 1);
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CompositeImplicitAutograd, m) {
  m.impl("multiscale_temporal_conv", &multiscale_temporal_conv);
}

}  // namespace skelang
