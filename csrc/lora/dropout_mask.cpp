// dropout_mask's checks and CPU kernel (see dropout_mask.h).
#include "lora/dropout_mask.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

#include "common/multiversion.h"

namespace skelang {

uint32_t dropout_threshold(double p, int64_t seed) {
  constexpr const char* op = "skelang::dropout_mask";
  TORCH_CHECK(p >= 0.0 && p < 1.0, op, ": the drop probability p must be in [0, 1), got ", p);
  TORCH_CHECK(seed >= 0, op, ": seed must be non-negative, got ", seed);
  return static_cast<uint32_t>(std::lround(p * 65536.0));
}

namespace {

// Words [begin, end) of the mask, 4 elements each, the last one cut at `numel`.
SKELANG_MULTIVERSION void fill_mask(bool* kept, uint64_t seed, uint32_t threshold, int64_t begin,
                                    int64_t end, int64_t numel) {
  const int64_t full_end = std::min(end, numel / 4);
  for (int64_t word = begin; word < full_end; ++word)
    dropout_mask_word(seed, static_cast<uint64_t>(word), threshold, kept + 4 * word);
  if (end > full_end) {  // the partial last word
    bool lanes[4];
    dropout_mask_word(seed, static_cast<uint64_t>(full_end), threshold, lanes);
    for (int64_t i = 4 * full_end; i < numel; ++i) kept[i] = lanes[i - 4 * full_end];
  }
}

at::Tensor dropout_mask_cpu(const at::Tensor& x, double p, int64_t seed) {
  const uint32_t threshold = dropout_threshold(p, seed);
  at::Tensor mask = at::empty(x.sizes(), x.options().dtype(at::kBool));
  const int64_t numel = mask.numel(), words = (numel + 3) / 4;
  bool* kept = mask.mutable_data_ptr<bool>();
  at::parallel_for(0, words, 16384, [&](int64_t begin, int64_t end) {
    fill_mask(kept, static_cast<uint64_t>(seed), threshold, begin, end, numel);
  });
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CPU, m) { m.impl("dropout_mask", &dropout_mask_cpu); }

}  // namespace skelang
