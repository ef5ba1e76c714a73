// CUDA kernel of dropout_mask: one thread per 4-element word (see lora/dropout_mask.h).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "lora/dropout_mask.h"

namespace skelang {

uint32_t dropout_threshold(double p, int64_t seed);

namespace {

__global__ void dropout_mask_kernel(bool* kept, uint64_t seed, uint32_t threshold, int64_t numel) {
  const int64_t word = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (4 * word >= numel) return;
  bool lanes[4];
  dropout_mask_word(seed, static_cast<uint64_t>(word), threshold, lanes);
  for (int lane = 0; lane < 4 && 4 * word + lane < numel; ++lane)
    kept[4 * word + lane] = lanes[lane];
}

at::Tensor dropout_mask_cuda(const at::Tensor& x, double p, int64_t seed) {
  const uint32_t threshold = dropout_threshold(p, seed);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor mask = at::empty(x.sizes(), x.options().dtype(at::kBool));
  const int64_t numel = mask.numel(), words = (numel + 3) / 4;
  if (words == 0) return mask;
  constexpr int threads = 256;
  const int64_t blocks = (words + threads - 1) / threads;
  dropout_mask_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      mask.mutable_data_ptr<bool>(), static_cast<uint64_t>(seed), threshold, numel);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CUDA, m) { m.impl("dropout_mask", &dropout_mask_cuda); }

}  // namespace skelang
