// CUDA kernels of graph_aggregate (float32, float64). One thread per output element; the
// topology is read through its strides (a transposed view costs no copy) and stays in cache.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/reduced_precision.h"
#include "encoder/graph_aggregate.h"

namespace skelang {
namespace {

constexpr int kThreads = 256;

struct TopologyStrides {
  int64_t s0, s1, s2, s3;
};

// y[n,c,t,u] = sum_v A[na,ca,u,v] x[n,c,t,v]; x, y contiguous (N, C, T, V).
template <typename scalar_t>
__global__ void graph_aggregate_kernel(const scalar_t* __restrict__ x,
                                       const scalar_t* __restrict__ A, TopologyStrides sA,
                                       scalar_t* __restrict__ y, int64_t N, int64_t C, int64_t T,
                                       int64_t V, int64_t Na, int64_t Ca) {
  const int64_t total = N * C * T * V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t u = i % V;
    const int64_t row = i / V;      // (n * C + c) * T + t
    const int64_t slice = row / T;  // n * C + c
    const int64_t n = slice / C, c = slice % C;
    const int64_t topology = topology_index(n, c, Na, Ca);
    const scalar_t* A_row = A + (topology / Ca) * sA.s0 + (topology % Ca) * sA.s1 + u * sA.s2;
    const scalar_t* x_row = x + row * V;
    scalar_t acc = 0;
    for (int64_t v = 0; v < V; ++v) acc += A_row[v * sA.s3] * x_row[v];
    y[i] = acc;
  }
}

// partial[job, u, v] for job = topology * chunks + k: chunk k of the slices sharing the
// topology, summed over t of grad_y[n,c,t,u] x[n,c,t,v]. One block per job.
template <typename scalar_t>
__global__ void graph_aggregate_grad_topology_kernel(const scalar_t* __restrict__ grad_y,
                                                     const scalar_t* __restrict__ x,
                                                     scalar_t* __restrict__ partial, int64_t N,
                                                     int64_t C, int64_t T, int64_t V, int64_t Na,
                                                     int64_t Ca, int64_t chunks) {
  const int64_t job = blockIdx.x;
  const int64_t topology = job / chunks, k = job % chunks;
  const int64_t na = topology / Ca, ca = topology % Ca;
  const int64_t slices_per_topology = (N / Na) * (C / Ca);
  const int64_t r_begin = k * slices_per_topology / chunks;
  const int64_t r_end = (k + 1) * slices_per_topology / chunks;
  for (int64_t uv = threadIdx.x; uv < V * V; uv += blockDim.x) {
    const int64_t u = uv / V, v = uv % V;
    scalar_t acc = 0;
    for (int64_t r = r_begin; r < r_end; ++r) {
      int64_t n, c;
      topology_slice(na, ca, r, N, C, Na, Ca, &n, &c);
      const int64_t offset = (n * C + c) * T * V;
      for (int64_t t = 0; t < T; ++t) acc += grad_y[offset + t * V + u] * x[offset + t * V + v];
    }
    partial[job * V * V + uv] = acc;
  }
}

at::Tensor graph_aggregate_cuda(const at::Tensor& x_in, const at::Tensor& A) {
  check_graph_aggregate_inputs(x_in, A);
  if (is_reduced_float(x_in))
    return graph_aggregate_cuda(as_float32(x_in), as_float32(A)).to(x_in.scalar_type());
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (y.numel() == 0) return y;
  const TopologyStrides sA{A.stride(0), A.stride(1), A.stride(2), A.stride(3)};
  const int64_t blocks = std::min<int64_t>((y.numel() + kThreads - 1) / kThreads, 65535 * 32);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graph_aggregate_cuda", [&] {
    graph_aggregate_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), A.const_data_ptr<scalar_t>(), sA,
        y.mutable_data_ptr<scalar_t>(), N, C, T, V, A.size(0), A.size(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor graph_aggregate_grad_topology_cuda(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                              int64_t Na, int64_t Ca) {
  check_graph_aggregate_grad_topology_inputs(grad_y_in, x_in, Na, Ca);
  if (is_reduced_float(x_in))
    return graph_aggregate_grad_topology_cuda(as_float32(grad_y_in), as_float32(x_in), Na, Ca)
        .to(x_in.scalar_type());
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor grad_y = grad_y_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), V = x.size(3);
  if (N == 0 || C == 0) return at::zeros({Na, Ca, V, V}, x.options());  // no slice to sum
  const int64_t topologies = Na * Ca;
  const int64_t chunks = grad_topology_chunks(topologies, (N / Na) * (C / Ca));
  at::Tensor partial = at::zeros({topologies, chunks, V, V}, x.options());
  if (T > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "graph_aggregate_grad_topology_cuda", [&] {
      graph_aggregate_grad_topology_kernel<scalar_t><<<topologies * chunks, kThreads, 0, stream>>>(
          grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          partial.mutable_data_ptr<scalar_t>(), N, C, T, V, Na, Ca, chunks);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  at::Tensor grad_A = chunks == 1 ? partial.select(1, 0) : partial.sum(1);
  return grad_A.view({Na, Ca, V, V});
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CUDA, m) {
  m.impl("graph_aggregate", &graph_aggregate_cuda);
  m.impl("graph_aggregate_grad_topology", &graph_aggregate_grad_topology_cuda);
}

}  // namespace skelang
