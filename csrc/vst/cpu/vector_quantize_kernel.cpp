// CPU kernels of the vector quantizer (float32, float64). nearest_code works on tiles of
// kRowTile rows x kCodeTile codes: one matrix product (ATen's BLAS) into a per-thread
// buffer, then a running minimum per row; memory beyond the inputs is one buffer per thread.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/multiversion.h"
#include "common/reduced_precision.h"
#include "vst/vector_quantize.h"

namespace skelang {
namespace {

constexpr int64_t kRowTile = 128;
constexpr int64_t kCodeTile = 1024;

// The running minimum of one row over a tile of codes, Bytes bytes of scores at a time (GCC
// vector extensions, as wide as the target's registers: 64 on AVX-512, 32 on AVX2, 16 on
// baseline x86-64; wider ones are split into halves kept on the stack): score = |e|^2 - 2 x.e
// (euclidean) or -x.e / |e| (cosine). Each lane keeps its first minimum; across lanes the
// lowest code wins a tie.
template <typename scalar_t, typename index_t, bool cosine, int Bytes>
inline __attribute__((always_inline)) void scan_codes(const scalar_t* __restrict dot,
                                                      const scalar_t* __restrict code_term,
                                                      int64_t codes, int64_t first_code,
                                                      scalar_t* best, int64_t* best_code) {
  constexpr int W = Bytes / sizeof(scalar_t);
  typedef scalar_t vec __attribute__((vector_size(Bytes)));
  typedef index_t ivec __attribute__((vector_size(Bytes)));
  vec lane_best;
  ivec lane_code, code;
  for (int i = 0; i < W; ++i) {
    lane_best[i] = *best;
    lane_code[i] = index_t(*best_code);
    code[i] = index_t(first_code + i);
  }
  int64_t k = 0;
  for (; k + W <= codes; k += W) {
    vec d, c;
    std::memcpy(&d, dot + k, sizeof(vec));
    std::memcpy(&c, code_term + k, sizeof(vec));
    const vec score = cosine ? -d * c : c - 2 * d;
    const auto better = score < lane_best;
    lane_best = better ? score : lane_best;
    lane_code = better ? code : lane_code;
    code += index_t(W);
  }
  scalar_t b = lane_best[0];
  int64_t bc = lane_code[0];
  for (int i = 1; i < W; ++i)
    if (lane_best[i] < b || (lane_best[i] == b && lane_code[i] < bc)) {
      b = lane_best[i];
      bc = lane_code[i];
    }
  for (; k < codes; ++k) {  // the tail
    const scalar_t score = cosine ? -dot[k] * code_term[k] : code_term[k] - 2 * dot[k];
    if (score < b) {
      b = score;
      bc = first_code + k;
    }
  }
  *best = b;
  *best_code = bc;
}

template <typename scalar_t, int Bytes>
inline __attribute__((always_inline)) void scan_codes_of(const scalar_t* dot,
                                                         const scalar_t* code_term, int64_t codes,
                                                         int64_t first_code, bool cosine,
                                                         scalar_t* best, int64_t* best_code) {
  // lanes of the codes' indices as wide as the scores': int32 beside float, int64 beside double
  using index_t = std::conditional_t<sizeof(scalar_t) == 4, int32_t, int64_t>;
  if (cosine)
    scan_codes<scalar_t, index_t, true, Bytes>(dot, code_term, codes, first_code, best, best_code);
  else
    scan_codes<scalar_t, index_t, false, Bytes>(dot, code_term, codes, first_code, best, best_code);
}

// The entry points, compiled for each target with its vector width; ScanCodes<scalar_t> is
// the one this CPU runs.
template <typename scalar_t>
SKELANG_TARGET_V4 void scan_codes_v4(const scalar_t* dot, const scalar_t* code_term, int64_t codes,
                                     int64_t first_code, bool cosine, scalar_t* best,
                                     int64_t* best_code) {
  scan_codes_of<scalar_t, 64>(dot, code_term, codes, first_code, cosine, best, best_code);
}
template <typename scalar_t>
SKELANG_TARGET_V3 void scan_codes_v3(const scalar_t* dot, const scalar_t* code_term, int64_t codes,
                                     int64_t first_code, bool cosine, scalar_t* best,
                                     int64_t* best_code) {
  scan_codes_of<scalar_t, 32>(dot, code_term, codes, first_code, cosine, best, best_code);
}
template <typename scalar_t>
void scan_codes_baseline(const scalar_t* dot, const scalar_t* code_term, int64_t codes,
                         int64_t first_code, bool cosine, scalar_t* best, int64_t* best_code) {
  scan_codes_of<scalar_t, 16>(dot, code_term, codes, first_code, cosine, best, best_code);
}
template <typename scalar_t>
using ScanCodes = void (*)(const scalar_t*, const scalar_t*, int64_t, int64_t, bool, scalar_t*,
                           int64_t*);
template <typename scalar_t>
ScanCodes<scalar_t> scan_codes_kernel() {
  switch (cpu_level()) {
    case 4:
      return scan_codes_v4<scalar_t>;
    case 3:
      return scan_codes_v3<scalar_t>;
    default:
      return scan_codes_baseline<scalar_t>;
  }
}

std::tuple<at::Tensor, at::Tensor> nearest_code_cpu(const at::Tensor& x_in,
                                                    const at::Tensor& codebook_in,
                                                    c10::string_view metric_name) {
  check_nearest_code_inputs(x_in, codebook_in);
  if (is_reduced_float(x_in))
    return to_dtype(nearest_code_cpu(as_float32(x_in), as_float32(codebook_in), metric_name),
                    x_in.scalar_type());
  const CodeMetric metric = parse_code_metric(
      "skelang::nearest_code", std::string_view(metric_name.data(), metric_name.size()));
  const at::Tensor x = x_in.contiguous(), codebook = codebook_in.contiguous();
  const int64_t N = x.size(0), K = codebook.size(0), D = x.size(1);
  at::Tensor indices = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor distances = at::empty({N}, x.options());
  if (N == 0) return {indices, distances};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nearest_code_cpu", [&] {
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    const scalar_t* cb_data = codebook.const_data_ptr<scalar_t>();
    // Per code: |e|^2 (euclidean) or 1 / |e| (cosine; 0 for a zero code).
    std::vector<scalar_t> code_term(K);
    at::parallel_for(0, K, 256, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        scalar_t sq = 0;
        for (int64_t d = 0; d < D; ++d) sq += cb_data[k * D + d] * cb_data[k * D + d];
        code_term[k] = metric == CodeMetric::kEuclidean || std::isnan(sq)
                           ? sq  // a code with a NaN keeps it
                           : (sq > 0 ? 1 / std::sqrt(sq) : 0);
      }
    });
    // NaN propagates as in the reference's min over distances: a NaN row is at NaN from code
    // 0, a code with a NaN makes every row's minimum NaN at the first such code.
    int64_t first_nan_code = -1;
    for (int64_t k = 0; k < K && first_nan_code < 0; ++k)
      if (std::isnan(code_term[k])) first_nan_code = k;
    int64_t* index_data = indices.mutable_data_ptr<int64_t>();
    scalar_t* distance_data = distances.mutable_data_ptr<scalar_t>();
    const int64_t row_tiles = (N + kRowTile - 1) / kRowTile;
    const ScanCodes<scalar_t> scan = scan_codes_kernel<scalar_t>();
    at::parallel_for(0, row_tiles, 1, [&](int64_t begin, int64_t end) {
      at::Tensor dots = at::empty({kRowTile, std::min(K, kCodeTile)}, x.options());  // x e^T
      std::vector<scalar_t> best(kRowTile);
      std::vector<int64_t> best_code(kRowTile);
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t r0 = tile * kRowTile, rows = std::min(kRowTile, N - r0);
        std::fill(best.begin(), best.end(), std::numeric_limits<scalar_t>::infinity());
        std::fill(best_code.begin(), best_code.end(), 0);
        for (int64_t k0 = 0; k0 < K; k0 += kCodeTile) {
          const int64_t codes = std::min(kCodeTile, K - k0);
          at::Tensor tile_dots = dots.narrow(0, 0, rows).narrow(1, 0, codes);
          at::mm_out(tile_dots, x.narrow(0, r0, rows), codebook.narrow(0, k0, codes).t());
          const scalar_t* dot = tile_dots.const_data_ptr<scalar_t>();
          const int64_t ld = tile_dots.stride(0);
          for (int64_t r = 0; r < rows; ++r)
            scan(dot + r * ld, code_term.data() + k0, codes, k0, metric == CodeMetric::kCosine,
                 &best[r], &best_code[r]);
        }
        for (int64_t r = 0; r < rows; ++r) {
          const scalar_t* row = x_data + (r0 + r) * D;
          scalar_t sq = 0;
          for (int64_t d = 0; d < D; ++d) sq += row[d] * row[d];
          index_data[r0 + r] = best_code[r];
          distance_data[r0 + r] = metric == CodeMetric::kEuclidean
                                      ? std::max<scalar_t>(0, sq + best[r])
                                      : (sq > 0 ? 1 + best[r] / std::sqrt(sq) : scalar_t(1));
          if (std::isnan(sq) || first_nan_code >= 0) {
            index_data[r0 + r] = std::isnan(sq) ? 0 : first_nan_code;
            distance_data[r0 + r] = std::numeric_limits<scalar_t>::quiet_NaN();
          }
        }
      }
    });
  });
  return {indices, distances};
}

std::tuple<at::Tensor, at::Tensor> code_statistics_cpu(const at::Tensor& x_in,
                                                       const at::Tensor& indices_in,
                                                       int64_t num_codes) {
  check_code_statistics_inputs(x_in, indices_in, num_codes);
  if (is_reduced_float(x_in))
    return to_dtype(code_statistics_cpu(as_float32(x_in), indices_in, num_codes),
                    x_in.scalar_type());
  const at::Tensor x = x_in.contiguous(), indices = indices_in.contiguous();
  const int64_t N = x.size(0), D = x.size(1), K = num_codes;
  at::Tensor counts = at::zeros({K}, x.options());
  at::Tensor sums = at::zeros({K, D}, x.options());
  const int64_t* index_data = indices.const_data_ptr<int64_t>();
  // Rows grouped by code (a counting sort that keeps row order), then each code sums its
  // rows in that order: parallel over codes, deterministic.
  std::vector<int64_t> offsets(K + 1, 0);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t k = index_data[i];
    TORCH_CHECK(k >= 0 && k < K, "skelang::code_statistics: indices[", i, "] = ", k,
                " is not a code in [0, ", K, ")");
    ++offsets[k + 1];
  }
  for (int64_t k = 0; k < K; ++k) offsets[k + 1] += offsets[k];
  std::vector<int64_t> rows(N), fill(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < N; ++i) rows[fill[index_data[i]]++] = i;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "code_statistics_cpu", [&] {
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    scalar_t* count_data = counts.mutable_data_ptr<scalar_t>();
    scalar_t* sum_data = sums.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, K, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, D)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t k = begin; k < end; ++k) {
                         count_data[k] = scalar_t(offsets[k + 1] - offsets[k]);
                         scalar_t* sum = sum_data + k * D;
                         for (int64_t j = offsets[k]; j < offsets[k + 1]; ++j) {
                           const scalar_t* row = x_data + rows[j] * D;
                           for (int64_t d = 0; d < D; ++d) sum[d] += row[d];
                         }
                       }
                     });
  });
  return {counts, sums};
}

void ema_codebook_update_cpu(const at::Tensor& codebook, const at::Tensor& cluster_size,
                             const at::Tensor& embed_sum, const at::Tensor& counts_in,
                             const at::Tensor& sums_in, double decay, double epsilon) {
  check_ema_codebook_update_inputs(codebook, cluster_size, embed_sum, counts_in, sums_in, decay,
                                   epsilon);
  if (is_reduced_float(codebook)) {  // in float32 copies, then back into the state
    at::Tensor state[3] = {as_float32(codebook), as_float32(cluster_size), as_float32(embed_sum)};
    ema_codebook_update_cpu(state[0], state[1], state[2], as_float32(counts_in),
                            as_float32(sums_in), decay, epsilon);
    codebook.copy_(state[0]);
    cluster_size.copy_(state[1]);
    embed_sum.copy_(state[2]);
    return;
  }
  const at::Tensor counts = counts_in.contiguous(), sums = sums_in.contiguous();
  const int64_t K = codebook.size(0), D = codebook.size(1);
  AT_DISPATCH_FLOATING_TYPES(codebook.scalar_type(), "ema_codebook_update_cpu", [&] {
    scalar_t* size_data = cluster_size.mutable_data_ptr<scalar_t>();
    scalar_t* embed_data = embed_sum.mutable_data_ptr<scalar_t>();
    scalar_t* code_data = codebook.mutable_data_ptr<scalar_t>();
    const scalar_t* count_data = counts.const_data_ptr<scalar_t>();
    const scalar_t* sum_data = sums.const_data_ptr<scalar_t>();
    const scalar_t keep = scalar_t(decay), take = scalar_t(1 - decay), eps = scalar_t(epsilon);
    scalar_t total = 0;  // in code order: the same sum for any thread count
    for (int64_t k = 0; k < K; ++k) {
      size_data[k] = keep * size_data[k] + take * count_data[k];
      total += size_data[k];
    }
    at::parallel_for(0, K, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, D)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t k = begin; k < end; ++k) {
                         const scalar_t smoothed = (size_data[k] + eps) / (total + K * eps) * total;
                         for (int64_t d = 0; d < D; ++d) {
                           scalar_t& e = embed_data[k * D + d];
                           e = keep * e + take * sum_data[k * D + d];
                           code_data[k * D + d] = e / smoothed;
                         }
                       }
                     });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CPU, m) {
  m.impl("nearest_code", &nearest_code_cpu);
  m.impl("code_statistics", &code_statistics_cpu);
  m.impl("ema_codebook_update_", &ema_codebook_update_cpu);
}

}  // namespace skelang
