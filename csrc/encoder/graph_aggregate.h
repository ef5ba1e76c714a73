// graph_aggregate: aggregation of joint features over a skeleton topology.
//
//   x  (N, C, T, V)     features of V joints over T frames
//   A  (Na, Ca, V, V)   topology; Na in {1, N}, Ca in {1, C}, broadcast without copies:
//                         (1, 1): one shared skeleton graph (ST-GCN)
//                         (1, C): one topology per channel (CTR-GCN)
//                         (N, 1): one attention map per sample (GSM)
//                         (N, C): one topology per sample and channel
//   y  (N, C, T, V)     y[n,c,t,u] = sum_v A[n,c,u,v] x[n,c,t,v]
//
// Backward: grad_x = graph_aggregate(grad_y, A^T) and
//   grad_A[na,ca,u,v] = sum over the (n, c) that share (na, ca) and over t of
//                       grad_y[n,c,t,u] x[n,c,t,v]   (graph_aggregate_grad_topology).
#pragma once

#include <ATen/core/Tensor.h>

#include "encoder/graph_aggregate_common.h"

namespace skelang {

// Shape checks shared by the CPU and CUDA kernels.
void check_graph_aggregate_inputs(const at::Tensor& x, const at::Tensor& A);
void check_graph_aggregate_grad_topology_inputs(const at::Tensor& grad_y, const at::Tensor& x,
                                                int64_t topology_batch, int64_t topology_channels);

}  // namespace skelang
