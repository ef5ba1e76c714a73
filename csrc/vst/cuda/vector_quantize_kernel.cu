// CUDA kernels of the vector quantizer (float32, float64). nearest_code: one warp per row,
// the lanes splitting the D dimensions, a running minimum over the codes (no N x K matrix).
// code_statistics: atomic adds (the order of float additions, hence the last bits, may vary
// between runs on CUDA). ema_codebook_update_: element-wise, after one sum over the codes.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/reduced_precision.h"
#include "vst/vector_quantize.h"

namespace skelang {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

template <typename scalar_t>
__device__ scalar_t warp_sum(scalar_t v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
__global__ void nearest_code_kernel(const scalar_t* __restrict__ x,
                                    const scalar_t* __restrict__ codebook,
                                    const scalar_t* __restrict__ code_term, int64_t N, int64_t K,
                                    int64_t D, bool cosine, int64_t* __restrict__ indices,
                                    scalar_t* __restrict__ distances) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / kWarp;
  if (row >= N) return;
  const scalar_t* xr = x + row * D;
  scalar_t sq = 0;
  for (int64_t d = lane; d < D; d += kWarp) sq += xr[d] * xr[d];
  sq = warp_sum(sq);
  scalar_t best = 0;
  int64_t best_code = -1, first_nan_code = -1;
  for (int64_t k = 0; k < K; ++k) {
    scalar_t dot = 0;
    for (int64_t d = lane; d < D; d += kWarp) dot += xr[d] * codebook[k * D + d];
    dot = warp_sum(dot);
    const scalar_t score = cosine ? -dot * code_term[k] : code_term[k] - 2 * dot;
    if (first_nan_code < 0 && isnan(code_term[k])) first_nan_code = k;
    if (best_code < 0 || score < best) {
      best = score;
      best_code = k;
    }
  }
  if (lane == 0) {
    indices[row] = best_code;
    distances[row] =
        cosine ? (sq > 0 ? 1 + best / sqrt(sq) : scalar_t(1)) : max(scalar_t(0), sq + best);
    if (isnan(sq) || first_nan_code >= 0) {  // NaN propagates as in the reference's min
      indices[row] = isnan(sq) ? 0 : first_nan_code;
      distances[row] = sq * scalar_t(0) / scalar_t(0);  // a quiet NaN
    }
  }
}

template <typename scalar_t>
__global__ void code_terms_kernel(const scalar_t* __restrict__ codebook, int64_t K, int64_t D,
                                  bool cosine, scalar_t* __restrict__ code_term) {
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (k >= K) return;
  scalar_t sq = 0;
  for (int64_t d = 0; d < D; ++d) sq += codebook[k * D + d] * codebook[k * D + d];
  code_term[k] = cosine && !isnan(sq) ? (sq > 0 ? 1 / sqrt(sq) : scalar_t(0)) : sq;  // NaN kept
}

std::tuple<at::Tensor, at::Tensor> nearest_code_cuda(const at::Tensor& x_in,
                                                     const at::Tensor& codebook_in,
                                                     c10::string_view metric_name) {
  check_nearest_code_inputs(x_in, codebook_in);
  if (is_reduced_float(x_in))
    return to_dtype(nearest_code_cuda(as_float32(x_in), as_float32(codebook_in), metric_name),
                    x_in.scalar_type());
  const bool cosine = parse_code_metric("skelang::nearest_code",
                                        std::string_view(metric_name.data(), metric_name.size())) ==
                      CodeMetric::kCosine;
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), codebook = codebook_in.contiguous();
  const int64_t N = x.size(0), K = codebook.size(0), D = x.size(1);
  at::Tensor indices = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor distances = at::empty({N}, x.options());
  if (N == 0) return {indices, distances};
  at::Tensor code_term = at::empty({K}, x.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nearest_code_cuda", [&] {
    code_terms_kernel<scalar_t><<<(K + 255) / 256, 256, 0, stream>>>(
        codebook.const_data_ptr<scalar_t>(), K, D, cosine, code_term.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    nearest_code_kernel<scalar_t>
        <<<(N + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarp * kWarpsPerBlock, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), codebook.const_data_ptr<scalar_t>(),
            code_term.const_data_ptr<scalar_t>(), N, K, D, cosine,
            indices.mutable_data_ptr<int64_t>(), distances.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {indices, distances};
}

template <typename scalar_t>
__global__ void code_statistics_kernel(const scalar_t* __restrict__ x,
                                       const int64_t* __restrict__ indices, int64_t N, int64_t D,
                                       int64_t K, scalar_t* __restrict__ counts,
                                       scalar_t* __restrict__ sums) {
  const int64_t total = N * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / D, d = i % D, k = indices[row];
    if (k < 0 || k >= K) continue;  // checked on the host side by the Python module
    atomicAdd(sums + k * D + d, x[i]);
    if (d == 0) atomicAdd(counts + k, scalar_t(1));
  }
}

std::tuple<at::Tensor, at::Tensor> code_statistics_cuda(const at::Tensor& x_in,
                                                        const at::Tensor& indices_in,
                                                        int64_t num_codes) {
  check_code_statistics_inputs(x_in, indices_in, num_codes);
  if (is_reduced_float(x_in))
    return to_dtype(code_statistics_cuda(as_float32(x_in), indices_in, num_codes),
                    x_in.scalar_type());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), indices = indices_in.contiguous();
  const int64_t N = x.size(0), D = x.size(1);
  at::Tensor counts = at::zeros({num_codes}, x.options());
  at::Tensor sums = at::zeros({num_codes, D}, x.options());
  if (N == 0) return {counts, sums};
  const int64_t blocks = std::min<int64_t>((N * D + 255) / 256, 65535);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "code_statistics_cuda", [&] {
    code_statistics_kernel<scalar_t><<<blocks, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), indices.const_data_ptr<int64_t>(), N, D, num_codes,
        counts.mutable_data_ptr<scalar_t>(), sums.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {counts, sums};
}

template <typename scalar_t>
__global__ void ema_kernel(scalar_t* __restrict__ codebook,
                           const scalar_t* __restrict__ cluster_size,
                           scalar_t* __restrict__ embed_sum, const scalar_t* __restrict__ sums,
                           const scalar_t* __restrict__ total, int64_t K, int64_t D, scalar_t keep,
                           scalar_t eps) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= K * D) return;
  const int64_t k = i / D;
  const scalar_t n = *total;
  const scalar_t smoothed = (cluster_size[k] + eps) / (n + K * eps) * n;
  embed_sum[i] = keep * embed_sum[i] + (1 - keep) * sums[i];
  codebook[i] = embed_sum[i] / smoothed;
}

void ema_codebook_update_cuda(const at::Tensor& codebook, const at::Tensor& cluster_size,
                              const at::Tensor& embed_sum, const at::Tensor& counts,
                              const at::Tensor& sums_in, double decay, double epsilon) {
  check_ema_codebook_update_inputs(codebook, cluster_size, embed_sum, counts, sums_in, decay,
                                   epsilon);
  if (is_reduced_float(codebook)) {  // in float32 copies, then back into the state
    at::Tensor state[3] = {as_float32(codebook), as_float32(cluster_size), as_float32(embed_sum)};
    ema_codebook_update_cuda(state[0], state[1], state[2], as_float32(counts), as_float32(sums_in),
                             decay, epsilon);
    codebook.copy_(state[0]);
    cluster_size.copy_(state[1]);
    embed_sum.copy_(state[2]);
    return;
  }
  const c10::cuda::CUDAGuard guard(codebook.device());
  cluster_size.mul_(decay).add_(counts, 1 - decay);
  const at::Tensor total = cluster_size.sum();
  const at::Tensor sums = sums_in.contiguous();
  const int64_t K = codebook.size(0), D = codebook.size(1);
  if (K * D == 0) return;
  AT_DISPATCH_FLOATING_TYPES(codebook.scalar_type(), "ema_codebook_update_cuda", [&] {
    ema_kernel<scalar_t><<<(K * D + 255) / 256, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        codebook.mutable_data_ptr<scalar_t>(), cluster_size.const_data_ptr<scalar_t>(),
        embed_sum.mutable_data_ptr<scalar_t>(), sums.const_data_ptr<scalar_t>(),
        total.const_data_ptr<scalar_t>(), K, D, scalar_t(decay), scalar_t(epsilon));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CUDA, m) {
  m.impl("nearest_code", &nearest_code_cuda);
  m.impl("code_statistics", &code_statistics_cuda);
  m.impl("ema_codebook_update_", &ema_codebook_update_cuda);
}

}  // namespace skelang
