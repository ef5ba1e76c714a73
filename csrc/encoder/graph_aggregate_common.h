// Index arithmetic of graph_aggregate shared by the CPU and CUDA kernels (host and device).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SKELANG_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SKELANG_HOST_DEVICE inline
#endif

namespace skelang {

// Which topology (na, ca) of A (Na, Ca, V, V) serves sample n, channel c.
SKELANG_HOST_DEVICE int64_t topology_index(int64_t n, int64_t c, int64_t Na, int64_t Ca) {
  return (Na == 1 ? 0 : n) * Ca + (Ca == 1 ? 0 : c);
}

// The gradient of one topology sums over R = (N / Na) * (C / Ca) slices (n, c). When there
// are few topologies, that sum is split into a fixed number of chunks whose partial sums
// are added in order afterwards: parallel work without atomics, and the same result for
// any number of threads.
SKELANG_HOST_DEVICE int64_t grad_topology_chunks(int64_t num_topologies,
                                                 int64_t slices_per_topology) {
  if (num_topologies >= 16) return 1;
  return slices_per_topology < 64 ? slices_per_topology : 64;
}

// The r-th slice (n, c) that shares topology (na, ca).
SKELANG_HOST_DEVICE void topology_slice(int64_t na, int64_t ca, int64_t r, int64_t N, int64_t C,
                                        int64_t Na, int64_t Ca, int64_t* n, int64_t* c) {
  const int64_t channels_per_topology = Ca == 1 ? C : 1;
  const int64_t n_offset = r / channels_per_topology;
  const int64_t c_offset = r % channels_per_topology;
  *n = Na == 1 ? n_offset : na;
  *c = Ca == 1 ? c_offset : ca;
}

}  // namespace skelang
