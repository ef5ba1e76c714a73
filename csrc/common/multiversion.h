// Run-time choice of instruction set for the CPU micro-kernels (GCC on x86-64; elsewhere every
// kernel is compiled once, for the build's target).
// - SKELANG_MULTIVERSION compiles one function for AVX-512, AVX2 and baseline x86-64 and picks
//   one at run time (GCC's target_clones): for code whose source suits every width.
// - SKELANG_TARGET_V4 / SKELANG_TARGET_V3 compile a function for x86-64-v4 (AVX-512) or
//   x86-64-v3 (AVX2, FMA), and cpu_level() says which of them the CPU runs (4, 3, or 0 for
//   baseline): for kernels whose vector width and register blocking depend on the target
//   (64-byte GCC vectors on AVX2 are split into ymm halves that spill: graph_aggregate and
//   nearest_code's scan).
#pragma once

#include <algorithm>
#include <cstdlib>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define SKELANG_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define SKELANG_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#define SKELANG_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#define SKELANG_X86_DISPATCH 1
#else
#define SKELANG_MULTIVERSION
#define SKELANG_TARGET_V4
#define SKELANG_TARGET_V3
#define SKELANG_X86_DISPATCH 0
#endif

namespace skelang {

// 4 (x86-64-v4: AVX-512), 3 (x86-64-v3: AVX2 + FMA) or 0 (anything else), read once; the
// environment variable SKELANG_CPU_LEVEL (0, 3 or 4) lowers it, to test or compare the
// narrower kernels on a wider CPU (as ATen's ATEN_CPU_CAPABILITY).
inline int cpu_level() {
#if SKELANG_X86_DISPATCH
  static const int level = [] {
    int detected = __builtin_cpu_supports("x86-64-v4")   ? 4
                   : __builtin_cpu_supports("x86-64-v3") ? 3
                                                         : 0;
    if (const char* cap = std::getenv("SKELANG_CPU_LEVEL")) {
      const int wanted = std::atoi(cap);
      detected = std::min(detected, wanted >= 4 ? 4 : (wanted >= 3 ? 3 : 0));
    }
    return detected;
  }();
  return level;
#else
  return 0;
#endif
}

}  // namespace skelang
