// dropout_mask: a bool dropout mask (true = kept) of x's shape, drawn from a counter-based
// hash of (seed, element index), so it is the same on every device and thread count and
// costs a few instructions per element (torch.rand_like(x) >= p costs ~5 ns each here).
//
// Element i takes the 16-bit lane (i mod 4) of splitmix64's output for the 64-bit word
// i / 4: z = mix(seed + (i / 4 + 1) * 0x9E3779B97F4A7C15), u = (z >> 16 (i mod 4)) & 0xFFFF,
// kept = u >= round(p * 65536). The drop probability is so rounded to a multiple of 1/65536
// (dropout_probability below: 0.05 -> 0.0500030...), which the caller's 1 / (1 - p) uses.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define SKELANG_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SKELANG_HOST_DEVICE inline
#endif

namespace skelang {

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

// splitmix64's output function (Steele, Lea and Flood 2014).
SKELANG_HOST_DEVICE uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The four mask elements [4 word, 4 word + 4) of a seed.
SKELANG_HOST_DEVICE void dropout_mask_word(uint64_t seed, uint64_t word, uint32_t threshold,
                                           bool* kept) {
  const uint64_t z = splitmix64_mix(seed + (word + 1) * kGoldenGamma);
  for (int lane = 0; lane < 4; ++lane)
    kept[lane] = static_cast<uint32_t>((z >> (16 * lane)) & 0xFFFFu) >= threshold;
}

}  // namespace skelang
