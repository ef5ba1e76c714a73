// CPU kernels of graph_aggregate (float32, float64): parallel over (n, c) slices with
// at::parallel_for; the inner loops run over contiguous joints and are compiled for
// AVX-512, AVX2 and baseline x86-64, picked at run time.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/multiversion.h"
#include "common/reduced_precision.h"
#include "encoder/graph_aggregate.h"

namespace skelang {
namespace {

// The micro-kernels work on 64-byte vectors (16 floats or 8 doubles) written with GCC/Clang
// vector extensions; target_clones compiles them as one zmm, two ymm or four xmm registers.
// A topology row of V joints is padded to Vp = NV * W values (W values per vector).
template <typename scalar_t>
struct Vector64;
template <>
struct Vector64<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct Vector64<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename scalar_t>
using Vec = typename Vector64<scalar_t>::type;
template <typename scalar_t>
constexpr int64_t kWidth = 64 / sizeof(scalar_t);

template <typename scalar_t>
inline __attribute__((always_inline)) Vec<scalar_t> load(const scalar_t* p) {
  Vec<scalar_t> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename scalar_t>
inline __attribute__((always_inline)) void store(scalar_t* p, Vec<scalar_t> v) {
  std::memcpy(p, &v, sizeof(v));
}

// RB frames of y (T, V) = x (T, V) @ At (V, Vp), where At[v][u] = A[u][v]: each output row is
// a sum of rows of At weighted by the frame's joint values, kept in NV x RB vector registers.
template <typename scalar_t, int NV, int RB>
inline __attribute__((always_inline)) void aggregate_frames(const scalar_t* __restrict x,
                                                            const scalar_t* __restrict At,
                                                            scalar_t* __restrict y, int64_t V) {
  constexpr int64_t W = kWidth<scalar_t>;
  Vec<scalar_t> acc[RB][NV] = {};
  for (int64_t v = 0; v < V; ++v) {
    Vec<scalar_t> row[NV];
    for (int k = 0; k < NV; ++k) row[k] = load(At + v * NV * W + k * W);
    for (int r = 0; r < RB; ++r) {
      const scalar_t w = x[r * V + v];
      for (int k = 0; k < NV; ++k) acc[r][k] += row[k] * w;
    }
  }
  // The RB output rows are contiguous in y: full vectors go straight to y, the tail of
  // each row (past V) through a small buffer.
  for (int r = 0; r < RB; ++r) {
    for (int k = 0; k + 1 < NV; ++k) store(y + r * V + k * W, acc[r][k]);
    alignas(64) scalar_t tail[W];
    store(tail, acc[r][NV - 1]);
    for (int64_t u = (NV - 1) * W; u < V; ++u) y[r * V + u] = tail[u - (NV - 1) * W];
  }
}

template <typename scalar_t, int NV>
inline __attribute__((always_inline)) void aggregate_slice_nv(const scalar_t* x, const scalar_t* At,
                                                              scalar_t* y, int64_t T, int64_t V) {
  constexpr int RB = NV == 1 ? 8 : (NV == 2 ? 6 : 3);
  int64_t t = 0;
  for (; t + RB <= T; t += RB) aggregate_frames<scalar_t, NV, RB>(x + t * V, At, y + t * V, V);
  for (; t < T; ++t) aggregate_frames<scalar_t, NV, 1>(x + t * V, At, y + t * V, V);
}

// G (V, Vp) += grad_y (T, V)^T @ x (T, Vp), RB rows of G at a time kept in registers.
template <typename scalar_t, int NV, int RB>
inline __attribute__((always_inline)) void accumulate_rows(const scalar_t* __restrict grad_y,
                                                           const scalar_t* __restrict x,
                                                           scalar_t* __restrict G, int64_t T,
                                                           int64_t V) {
  constexpr int64_t W = kWidth<scalar_t>;
  Vec<scalar_t> acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < NV; ++k) acc[r][k] = load(G + r * NV * W + k * W);
  for (int64_t t = 0; t < T; ++t) {
    Vec<scalar_t> row[NV];
    for (int k = 0; k < NV; ++k) row[k] = load(x + t * NV * W + k * W);
    for (int r = 0; r < RB; ++r) {
      const scalar_t g = grad_y[t * V + r];
      for (int k = 0; k < NV; ++k) acc[r][k] += row[k] * g;
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < NV; ++k) store(G + r * NV * W + k * W, acc[r][k]);
}

template <typename scalar_t, int NV>
inline __attribute__((always_inline)) void accumulate_topology_grad_nv(const scalar_t* grad_y,
                                                                       const scalar_t* x,
                                                                       scalar_t* G, int64_t T,
                                                                       int64_t V) {
  constexpr int RB = NV == 1 ? 8 : (NV == 2 ? 6 : 3);
  constexpr int64_t Vp = NV * kWidth<scalar_t>;
  int64_t u = 0;
  for (; u + RB <= V; u += RB) accumulate_rows<scalar_t, NV, RB>(grad_y + u, x, G + u * Vp, T, V);
  for (; u < V; ++u) accumulate_rows<scalar_t, NV, 1>(grad_y + u, x, G + u * Vp, T, V);
}

// Plain loops for skeletons too large for the register-blocked kernels (more than 4
// vectors per row: over 64 float or 32 double joints). Same padded layouts.
template <typename scalar_t>
inline __attribute__((always_inline)) void aggregate_slice_generic(const scalar_t* x,
                                                                   const scalar_t* At, scalar_t* y,
                                                                   int64_t T, int64_t V,
                                                                   int64_t Vp) {
  for (int64_t t = 0; t < T; ++t) {
    scalar_t* y_row = y + t * V;
    for (int64_t u = 0; u < V; ++u) y_row[u] = 0;
    for (int64_t v = 0; v < V; ++v) {
      const scalar_t w = x[t * V + v];
      for (int64_t u = 0; u < V; ++u) y_row[u] += w * At[v * Vp + u];
    }
  }
}
template <typename scalar_t>
inline __attribute__((always_inline)) void accumulate_topology_grad_generic(const scalar_t* grad_y,
                                                                            const scalar_t* x,
                                                                            scalar_t* G, int64_t T,
                                                                            int64_t V, int64_t Vp) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t u = 0; u < V; ++u) {
      const scalar_t g = grad_y[t * V + u];
      for (int64_t v = 0; v < V; ++v) G[u * Vp + v] += g * x[t * Vp + v];
    }
}

template <typename scalar_t>
inline int64_t vectors_per_row(int64_t V) {
  return (V + kWidth<scalar_t> - 1) / kWidth<scalar_t>;
}

#define SKELANG_SWITCH_NV(nv, CALL, GENERIC) \
  switch (nv) {                              \
    case 1: {                                \
      constexpr int NV = 1;                  \
      CALL;                                  \
      break;                                 \
    }                                        \
    case 2: {                                \
      constexpr int NV = 2;                  \
      CALL;                                  \
      break;                                 \
    }                                        \
    case 3: {                                \
      constexpr int NV = 3;                  \
      CALL;                                  \
      break;                                 \
    }                                        \
    case 4: {                                \
      constexpr int NV = 4;                  \
      CALL;                                  \
      break;                                 \
    }                                        \
    default:                                 \
      GENERIC;                               \
  }

template <typename scalar_t>
inline __attribute__((always_inline)) void aggregate_slice(const scalar_t* x, const scalar_t* At,
                                                           scalar_t* y, int64_t T, int64_t V) {
  const int64_t nv = vectors_per_row<scalar_t>(V);
  SKELANG_SWITCH_NV(nv, (aggregate_slice_nv<scalar_t, NV>(x, At, y, T, V)),
                    (aggregate_slice_generic(x, At, y, T, V, nv * kWidth<scalar_t>)));
}
template <typename scalar_t>
inline __attribute__((always_inline)) void accumulate_topology_grad(const scalar_t* grad_y,
                                                                    const scalar_t* x, scalar_t* G,
                                                                    int64_t T, int64_t V) {
  const int64_t nv = vectors_per_row<scalar_t>(V);
  SKELANG_SWITCH_NV(nv, (accumulate_topology_grad_nv<scalar_t, NV>(grad_y, x, G, T, V)),
                    (accumulate_topology_grad_generic(grad_y, x, G, T, V, nv * kWidth<scalar_t>)));
}

// The entry points of the micro-kernels, one per dtype, each compiled for every target.
SKELANG_MULTIVERSION void run_aggregate_slice(const float* x, const float* At, float* y, int64_t T,
                                              int64_t V) {
  aggregate_slice(x, At, y, T, V);
}
SKELANG_MULTIVERSION void run_aggregate_slice(const double* x, const double* At, double* y,
                                              int64_t T, int64_t V) {
  aggregate_slice(x, At, y, T, V);
}
SKELANG_MULTIVERSION void run_accumulate_topology_grad(const float* gy, const float* x, float* G,
                                                       int64_t T, int64_t V) {
  accumulate_topology_grad(gy, x, G, T, V);
}
SKELANG_MULTIVERSION void run_accumulate_topology_grad(const double* gy, const double* x, double* G,
                                                       int64_t T, int64_t V) {
  accumulate_topology_grad(gy, x, G, T, V);
}

at::Tensor graph_aggregate_cpu(const at::Tensor& x_in, const at::Tensor& A) {
  check_graph_aggregate_inputs(x_in, A);
  if (is_reduced_float(x_in))
    return graph_aggregate_cpu(as_float32(x_in), as_float32(A)).to(x_in.scalar_type());
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  const int64_t Na = A.size(0), Ca = A.size(1);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  // A is read through its strides (a transposed view costs no copy).
  const int64_t sA0 = A.stride(0), sA1 = A.stride(1), sA2 = A.stride(2), sA3 = A.stride(3);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graph_aggregate_cpu", [&] {
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    const scalar_t* A_data = A.const_data_ptr<scalar_t>();
    scalar_t* y_data = y.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, T * V * V));
    at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
      const int64_t Vp = vectors_per_row<scalar_t>(V) * kWidth<scalar_t>;
      std::vector<scalar_t> At(V * Vp, scalar_t(0));  // (V, Vp): A^T, rows zero-padded
      int64_t loaded = -1;
      for (int64_t slice = begin; slice < end; ++slice) {
        const int64_t n = slice / C, c = slice % C;
        const int64_t topology = topology_index(n, c, Na, Ca);
        if (topology != loaded) {
          const scalar_t* A_nc = A_data + (topology / Ca) * sA0 + (topology % Ca) * sA1;
          for (int64_t u = 0; u < V; ++u)
            for (int64_t v = 0; v < V; ++v) At[v * Vp + u] = A_nc[u * sA2 + v * sA3];
          loaded = topology;
        }
        run_aggregate_slice(x_data + slice * T * V, At.data(), y_data + slice * T * V, T, V);
      }
    });
  });
  return y;
}

at::Tensor graph_aggregate_grad_topology_cpu(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                             int64_t Na, int64_t Ca) {
  check_graph_aggregate_grad_topology_inputs(grad_y_in, x_in, Na, Ca);
  if (is_reduced_float(x_in))
    return graph_aggregate_grad_topology_cpu(as_float32(grad_y_in), as_float32(x_in), Na, Ca)
        .to(x_in.scalar_type());
  const at::Tensor grad_y = grad_y_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  if (N == 0 || C == 0) return at::zeros({Na, Ca, V, V}, x.options());  // no slice to sum
  const int64_t topologies = Na * Ca;
  const int64_t slices_per_topology = (N / Na) * (C / Ca);
  const int64_t chunks = grad_topology_chunks(topologies, slices_per_topology);
  // sums (topologies, chunks, V, V): chunk k of a topology sums its slices
  // [k * R / chunks, (k + 1) * R / chunks); the chunks are added afterwards in order.
  at::Tensor sums = at::empty({topologies, chunks, V, V}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graph_aggregate_grad_topology_cpu", [&] {
    const scalar_t* gy_data = grad_y.const_data_ptr<scalar_t>();
    const scalar_t* x_data = x.const_data_ptr<scalar_t>();
    scalar_t* sums_data = sums.mutable_data_ptr<scalar_t>();
    const int64_t Vp = vectors_per_row<scalar_t>(V) * kWidth<scalar_t>;
    const int64_t work_per_chunk = std::max<int64_t>(1, slices_per_topology / chunks * T * V * V);
    const int64_t grain = std::max<int64_t>(1, 16384 / work_per_chunk);
    at::parallel_for(0, topologies * chunks, grain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> G(V * Vp);                      // (V, Vp) accumulator
      std::vector<scalar_t> x_padded(T * Vp, scalar_t(0));  // (T, Vp) one slice of x
      for (int64_t job = begin; job < end; ++job) {
        const int64_t topology = job / chunks, k = job % chunks;
        const int64_t na = topology / Ca, ca = topology % Ca;
        std::fill(G.begin(), G.end(), scalar_t(0));
        for (int64_t r = k * slices_per_topology / chunks;
             r < (k + 1) * slices_per_topology / chunks; ++r) {
          int64_t n, c;
          topology_slice(na, ca, r, N, C, Na, Ca, &n, &c);
          const int64_t offset = (n * C + c) * T * V;
          for (int64_t t = 0; t < T; ++t)
            std::memcpy(x_padded.data() + t * Vp, x_data + offset + t * V, V * sizeof(scalar_t));
          run_accumulate_topology_grad(gy_data + offset, x_padded.data(), G.data(), T, V);
        }
        for (int64_t u = 0; u < V; ++u)
          std::memcpy(sums_data + (job * V + u) * V, G.data() + u * Vp, V * sizeof(scalar_t));
      }
    });
  });
  return (chunks == 1 ? sums : sums.sum(1)).view({Na, Ca, V, V});
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CPU, m) {
  m.impl("graph_aggregate", &graph_aggregate_cpu);
  m.impl("graph_aggregate_grad_topology", &graph_aggregate_grad_topology_cpu);
}

}  // namespace skelang
