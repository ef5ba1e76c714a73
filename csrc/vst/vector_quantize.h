// The vector quantizer's ops (VST, LVLM-VAR).
//
// nearest_code(x, codebook, metric) -> (indices, distances)
//   x (N, D), codebook (K, D); for each row the nearest code and its distance, computed by
//   tiles of rows x codes (a matrix product into a small per-thread buffer, then a running
//   minimum), never materialising the N x K distance matrix. metric "euclidean": squared
//   distance |x - e|^2; "cosine": 1 - cos(x, e). Ties go to the lowest code id.
//
// code_statistics(x, indices, num_codes) -> (counts (K), sums (K, D))
//   how many rows chose each code and the sum of those rows, summed in row order (the
//   same result for any thread count), ready to be all-reduced across DDP ranks.
//
// ema_codebook_update_(codebook!, cluster_size!, embed_sum!, counts, sums, decay, epsilon)
//   in place: cluster_size = decay cluster_size + (1 - decay) counts, the same for
//   embed_sum, then codebook[k] = embed_sum[k] / smoothed[k] with Laplace smoothing
//   smoothed[k] = (cluster_size[k] + eps) / (n + K eps) * n, n = sum of cluster_size.
#pragma once

#include <ATen/core/Tensor.h>

#include <string_view>

namespace skelang {

enum class CodeMetric { kEuclidean, kCosine };

CodeMetric parse_code_metric(const char* op, std::string_view metric);
void check_nearest_code_inputs(const at::Tensor& x, const at::Tensor& codebook);
void check_code_statistics_inputs(const at::Tensor& x, const at::Tensor& indices,
                                  int64_t num_codes);
void check_ema_codebook_update_inputs(const at::Tensor& codebook, const at::Tensor& cluster_size,
                                      const at::Tensor& embed_sum, const at::Tensor& counts,
                                      const at::Tensor& sums, double decay, double epsilon);

}  // namespace skelang
