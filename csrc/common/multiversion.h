// SKELANG_MULTIVERSION compiles a function for AVX-512, AVX2 and baseline x86-64 and picks
// one at run time (GCC's target_clones); elsewhere it is a plain function.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define SKELANG_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SKELANG_MULTIVERSION
#endif
