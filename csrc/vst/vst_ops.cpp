// Schemas of the vector quantizer's operators, and the input checks their kernels share.
#include <torch/library.h>

#include "common/checks.h"
#include "vst/vector_quantize.h"

namespace skelang {

CodeMetric parse_code_metric(const char* op, std::string_view metric) {
  if (metric == "euclidean") return CodeMetric::kEuclidean;
  if (metric == "cosine") return CodeMetric::kCosine;
  TORCH_CHECK(false, op, ": metric must be 'euclidean' or 'cosine', got '", metric, "'");
}

void check_nearest_code_inputs(const at::Tensor& x, const at::Tensor& codebook) {
  constexpr const char* op = "skelang::nearest_code";
  check_rank(op, "x", x, 2, "(N, D)");
  check_rank(op, "codebook", codebook, 2, "(K, D)");
  check_floating(op, "x", x);
  check_same_dtype(op, "x", x, "codebook", codebook);
  check_same_device(op, "x", x, "codebook", codebook);
  TORCH_CHECK(codebook.size(1) == x.size(1), op, ": codebook must be (K, D) with D = ", x.size(1),
              " as in x ", x.sizes(), ", got codebook of shape ", codebook.sizes());
  TORCH_CHECK(codebook.size(0) > 0, op, ": the codebook has no code");
}

void check_code_statistics_inputs(const at::Tensor& x, const at::Tensor& indices,
                                  int64_t num_codes) {
  constexpr const char* op = "skelang::code_statistics";
  check_rank(op, "x", x, 2, "(N, D)");
  check_rank(op, "indices", indices, 1, "(N)");
  check_floating(op, "x", x);
  check_same_device(op, "x", x, "indices", indices);
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices must be int64, got ",
              indices.scalar_type());
  TORCH_CHECK(indices.size(0) == x.size(0), op, ": indices must have one code per row of x (",
              x.size(0), "), got ", indices.size(0));
  TORCH_CHECK(num_codes > 0, op, ": num_codes must be positive, got ", num_codes);
}

void check_ema_codebook_update_inputs(const at::Tensor& codebook, const at::Tensor& cluster_size,
                                      const at::Tensor& embed_sum, const at::Tensor& counts,
                                      const at::Tensor& sums, double decay, double epsilon) {
  constexpr const char* op = "skelang::ema_codebook_update_";
  check_rank(op, "codebook", codebook, 2, "(K, D)");
  check_floating(op, "codebook", codebook);
  const int64_t K = codebook.size(0), D = codebook.size(1);
  check_same_dtype_and_device(op, "codebook", codebook,
                              {{"cluster_size", cluster_size},
                               {"embed_sum", embed_sum},
                               {"counts", counts},
                               {"sums", sums}});
  TORCH_CHECK(cluster_size.dim() == 1 && cluster_size.size(0) == K, op,
              ": cluster_size must be (K) = (", K, "), got ", cluster_size.sizes());
  TORCH_CHECK(counts.sizes() == cluster_size.sizes(), op, ": counts must be (K) = (", K, "), got ",
              counts.sizes());
  TORCH_CHECK(embed_sum.sizes() == codebook.sizes(), op, ": embed_sum must be (K, D) = (", K, ", ",
              D, "), got ", embed_sum.sizes());
  TORCH_CHECK(sums.sizes() == codebook.sizes(), op, ": sums must be (K, D) = (", K, ", ", D,
              "), got ", sums.sizes());
  TORCH_CHECK(codebook.is_contiguous() && cluster_size.is_contiguous() && embed_sum.is_contiguous(),
              op,
              ": codebook, cluster_size and embed_sum are updated in place and must be contiguous");
  TORCH_CHECK(decay >= 0 && decay < 1, op, ": decay must be in [0, 1), got ", decay);
  TORCH_CHECK(epsilon > 0, op, ": epsilon must be positive, got ", epsilon);
}

}  // namespace skelang

TORCH_LIBRARY_FRAGMENT(skelang, m) {
  // See vst/vector_quantize.h.
  m.def(
      "nearest_code(Tensor x, Tensor codebook, str metric) -> (Tensor indices, Tensor distances)");
  m.def("code_statistics(Tensor x, Tensor indices, int num_codes) -> (Tensor counts, Tensor sums)");
  m.def(
      "ema_codebook_update_(Tensor(a!) codebook, Tensor(b!) cluster_size, Tensor(c!) embed_sum, "
      "Tensor counts, Tensor sums, float decay, float epsilon) -> ()");
}
