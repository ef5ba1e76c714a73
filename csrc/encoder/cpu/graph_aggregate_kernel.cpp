// CPU kernels of graph_aggregate (float32, float64): parallel over (n, c) slices with
// at::parallel_for; the inner loops run over contiguous joints in vectors of the CPU's width
// (64 bytes on AVX-512, 32 on AVX2, 16 on baseline x86-64), picked at run time.
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

// The micro-kernels work on vectors of Bytes bytes written with GCC/Clang vector extensions,
// compiled for a target whose registers have that width: a wider generic vector would be
// split into halves that GCC keeps on the stack (the AVX2 code of 64-byte vectors ran its
// accumulators through memory). A topology row of V joints is padded to Vp = NV * W values
// (W values per vector).
template <typename scalar_t, int Bytes>
struct Vector {
  typedef scalar_t type __attribute__((vector_size(Bytes)));
  static constexpr int64_t width = Bytes / sizeof(scalar_t);
};

template <typename scalar_t, int Bytes>
inline __attribute__((always_inline)) typename Vector<scalar_t, Bytes>::type load(
    const scalar_t* p) {
  typename Vector<scalar_t, Bytes>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename scalar_t, int Bytes>
inline __attribute__((always_inline)) void store(scalar_t* p,
                                                 typename Vector<scalar_t, Bytes>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// Rows of a block kept in registers: RB x NV accumulators and NV row vectors within the
// target's vector registers (32 with AVX-512, 16 with AVX2 and SSE2) but one, for the
// broadcast (at NV = 8 on 16 registers, one row too many: loads then fold into the FMAs). The
// 64-byte blocking of up to 4 vectors per row is the one the kernels had before other widths.
constexpr int rows_per_block(int bytes, int nv) {
  const int registers = bytes == 64 ? 32 : 16;
  if (bytes == 64 && nv <= 4) return nv == 1 ? 8 : (nv == 2 ? 6 : 3);
  return std::max(1, std::min(8, (registers - 1 - nv) / nv));
}

// RB frames of y (T, V) = x (T, V) @ At (V, Vp), where At[v][u] = A[u][v]: each output row is
// a sum of rows of At weighted by the frame's joint values, kept in NV x RB vector registers.
template <typename scalar_t, int Bytes, int NV, int RB>
inline __attribute__((always_inline)) void aggregate_frames(const scalar_t* __restrict x,
                                                            const scalar_t* __restrict At,
                                                            scalar_t* __restrict y, int64_t V) {
  typedef typename Vector<scalar_t, Bytes>::type Vec;
  constexpr int64_t W = Vector<scalar_t, Bytes>::width;
  Vec acc[RB][NV] = {};
  for (int64_t v = 0; v < V; ++v) {
    Vec row[NV];
    for (int k = 0; k < NV; ++k) row[k] = load<scalar_t, Bytes>(At + v * NV * W + k * W);
    for (int r = 0; r < RB; ++r) {
      const scalar_t w = x[r * V + v];
      for (int k = 0; k < NV; ++k) acc[r][k] += row[k] * w;
    }
  }
  // The RB output rows are contiguous in y: full vectors go straight to y, the tail of
  // each row (past V) through a small buffer.
  for (int r = 0; r < RB; ++r) {
    for (int k = 0; k + 1 < NV; ++k) store<scalar_t, Bytes>(y + r * V + k * W, acc[r][k]);
    alignas(64) scalar_t tail[W];
    store<scalar_t, Bytes>(tail, acc[r][NV - 1]);
    for (int64_t u = (NV - 1) * W; u < V; ++u) y[r * V + u] = tail[u - (NV - 1) * W];
  }
}

template <typename scalar_t, int Bytes, int NV>
inline __attribute__((always_inline)) void aggregate_slice_nv(const scalar_t* x, const scalar_t* At,
                                                              scalar_t* y, int64_t T, int64_t V) {
  constexpr int RB = rows_per_block(Bytes, NV);
  int64_t t = 0;
  for (; t + RB <= T; t += RB)
    aggregate_frames<scalar_t, Bytes, NV, RB>(x + t * V, At, y + t * V, V);
  for (; t < T; ++t) aggregate_frames<scalar_t, Bytes, NV, 1>(x + t * V, At, y + t * V, V);
}

// G (V, Vp) += grad_y (T, V)^T @ x (T, Vp), RB rows of G at a time kept in registers.
template <typename scalar_t, int Bytes, int NV, int RB>
inline __attribute__((always_inline)) void accumulate_rows(const scalar_t* __restrict grad_y,
                                                           const scalar_t* __restrict x,
                                                           scalar_t* __restrict G, int64_t T,
                                                           int64_t V) {
  typedef typename Vector<scalar_t, Bytes>::type Vec;
  constexpr int64_t W = Vector<scalar_t, Bytes>::width;
  Vec acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < NV; ++k) acc[r][k] = load<scalar_t, Bytes>(G + r * NV * W + k * W);
  for (int64_t t = 0; t < T; ++t) {
    Vec row[NV];
    for (int k = 0; k < NV; ++k) row[k] = load<scalar_t, Bytes>(x + t * NV * W + k * W);
    for (int r = 0; r < RB; ++r) {
      const scalar_t g = grad_y[t * V + r];
      for (int k = 0; k < NV; ++k) acc[r][k] += row[k] * g;
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < NV; ++k) store<scalar_t, Bytes>(G + r * NV * W + k * W, acc[r][k]);
}

template <typename scalar_t, int Bytes, int NV>
inline __attribute__((always_inline)) void accumulate_topology_grad_nv(const scalar_t* grad_y,
                                                                       const scalar_t* x,
                                                                       scalar_t* G, int64_t T,
                                                                       int64_t V) {
  constexpr int RB = rows_per_block(Bytes, NV);
  constexpr int64_t Vp = NV * Vector<scalar_t, Bytes>::width;
  int64_t u = 0;
  for (; u + RB <= V; u += RB)
    accumulate_rows<scalar_t, Bytes, NV, RB>(grad_y + u, x, G + u * Vp, T, V);
  for (; u < V; ++u) accumulate_rows<scalar_t, Bytes, NV, 1>(grad_y + u, x, G + u * Vp, T, V);
}

// Plain loops for skeletons too large for the register-blocked kernels (more than 8
// vectors per row). Same padded layouts.
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

#define SKELANG_NV_CASE(n, CALL) \
  case n: {                      \
    constexpr int NV = n;        \
    CALL;                        \
    break;                       \
  }
// CALL with `constexpr int NV` = nv for nv in 1..8 (register-blocked kernels), else GENERIC.
#define SKELANG_SWITCH_NV(nv, CALL, GENERIC) \
  switch (nv) {                              \
    SKELANG_NV_CASE(1, CALL)                 \
    SKELANG_NV_CASE(2, CALL)                 \
    SKELANG_NV_CASE(3, CALL)                 \
    SKELANG_NV_CASE(4, CALL)                 \
    SKELANG_NV_CASE(5, CALL)                 \
    SKELANG_NV_CASE(6, CALL)                 \
    SKELANG_NV_CASE(7, CALL)                 \
    SKELANG_NV_CASE(8, CALL)                 \
    default:                                 \
      GENERIC;                               \
  }

template <typename scalar_t, int Bytes>
inline __attribute__((always_inline)) void aggregate_slice(const scalar_t* x, const scalar_t* At,
                                                           scalar_t* y, int64_t T, int64_t V,
                                                           int64_t Vp) {
  const int64_t nv = Vp / Vector<scalar_t, Bytes>::width;
  SKELANG_SWITCH_NV(nv, (aggregate_slice_nv<scalar_t, Bytes, NV>(x, At, y, T, V)),
                    (aggregate_slice_generic(x, At, y, T, V, Vp)));
}
template <typename scalar_t, int Bytes>
inline __attribute__((always_inline)) void accumulate_topology_grad(const scalar_t* grad_y,
                                                                    const scalar_t* x, scalar_t* G,
                                                                    int64_t T, int64_t V,
                                                                    int64_t Vp) {
  const int64_t nv = Vp / Vector<scalar_t, Bytes>::width;
  SKELANG_SWITCH_NV(nv, (accumulate_topology_grad_nv<scalar_t, Bytes, NV>(grad_y, x, G, T, V)),
                    (accumulate_topology_grad_generic(grad_y, x, G, T, V, Vp)));
}

// The entry points of the micro-kernels, compiled for each target with its vector width.
template <typename scalar_t>
SKELANG_TARGET_V4 void aggregate_slice_v4(const scalar_t* x, const scalar_t* At, scalar_t* y,
                                          int64_t T, int64_t V, int64_t Vp) {
  aggregate_slice<scalar_t, 64>(x, At, y, T, V, Vp);
}
template <typename scalar_t>
SKELANG_TARGET_V3 void aggregate_slice_v3(const scalar_t* x, const scalar_t* At, scalar_t* y,
                                          int64_t T, int64_t V, int64_t Vp) {
  aggregate_slice<scalar_t, 32>(x, At, y, T, V, Vp);
}
template <typename scalar_t>
void aggregate_slice_baseline(const scalar_t* x, const scalar_t* At, scalar_t* y, int64_t T,
                              int64_t V, int64_t Vp) {
  aggregate_slice<scalar_t, 16>(x, At, y, T, V, Vp);
}
template <typename scalar_t>
SKELANG_TARGET_V4 void accumulate_topology_grad_v4(const scalar_t* gy, const scalar_t* x,
                                                   scalar_t* G, int64_t T, int64_t V, int64_t Vp) {
  accumulate_topology_grad<scalar_t, 64>(gy, x, G, T, V, Vp);
}
template <typename scalar_t>
SKELANG_TARGET_V3 void accumulate_topology_grad_v3(const scalar_t* gy, const scalar_t* x,
                                                   scalar_t* G, int64_t T, int64_t V, int64_t Vp) {
  accumulate_topology_grad<scalar_t, 32>(gy, x, G, T, V, Vp);
}
template <typename scalar_t>
void accumulate_topology_grad_baseline(const scalar_t* gy, const scalar_t* x, scalar_t* G,
                                       int64_t T, int64_t V, int64_t Vp) {
  accumulate_topology_grad<scalar_t, 16>(gy, x, G, T, V, Vp);
}

// This CPU's kernels and the padded row length Vp they read.
template <typename scalar_t>
struct Kernels {
  void (*aggregate_slice)(const scalar_t*, const scalar_t*, scalar_t*, int64_t, int64_t, int64_t);
  void (*accumulate_topology_grad)(const scalar_t*, const scalar_t*, scalar_t*, int64_t, int64_t,
                                   int64_t);
  int64_t width;  // values per vector

  int64_t padded(int64_t V) const { return (V + width - 1) / width * width; }
};

template <typename scalar_t>
Kernels<scalar_t> kernels() {
  switch (cpu_level()) {
    case 4:
      return {aggregate_slice_v4<scalar_t>, accumulate_topology_grad_v4<scalar_t>,
              Vector<scalar_t, 64>::width};
    case 3:
      return {aggregate_slice_v3<scalar_t>, accumulate_topology_grad_v3<scalar_t>,
              Vector<scalar_t, 32>::width};
    default:
      return {aggregate_slice_baseline<scalar_t>, accumulate_topology_grad_baseline<scalar_t>,
              Vector<scalar_t, 16>::width};
  }
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
    const Kernels<scalar_t> run = kernels<scalar_t>();
    const int64_t Vp = run.padded(V);
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, T * V * V));
    at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
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
        run.aggregate_slice(x_data + slice * T * V, At.data(), y_data + slice * T * V, T, V, Vp);
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
    const Kernels<scalar_t> run = kernels<scalar_t>();
    const int64_t Vp = run.padded(V);
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
          run.accumulate_topology_grad(gy_data + offset, x_padded.data(), G.data(), T, V, Vp);
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
