// Schemas of the encoder's operators, and the input checks their kernels share.
#include <torch/library.h>

#include "common/checks.h"
#include "encoder/graph_aggregate.h"

namespace skelang {

void check_graph_aggregate_inputs(const at::Tensor& x, const at::Tensor& A) {
  constexpr const char* op = "skelang::graph_aggregate";
  check_rank(op, "x", x, 4, "(N, C, T, V)");
  check_rank(op, "A", A, 4, "(Na, Ca, V, V)");
  check_floating(op, "x", x);
  check_same_dtype(op, "x", x, "A", A);
  check_same_device(op, "x", x, "A", A);
  const int64_t V = x.size(3);
  TORCH_CHECK(A.size(2) == V && A.size(3) == V, op, ": A must be (Na, Ca, V, V) with V = ", V,
              " joints as in x ", x.sizes(), ", got A of shape ", A.sizes());
  check_broadcastable(op, "A.size(0) (topologies per sample)", A.size(0), x.size(0));
  check_broadcastable(op, "A.size(1) (topologies per channel)", A.size(1), x.size(1));
}

void check_graph_aggregate_grad_topology_inputs(const at::Tensor& grad_y, const at::Tensor& x,
                                                int64_t topology_batch, int64_t topology_channels) {
  constexpr const char* op = "skelang::graph_aggregate_grad_topology";
  check_rank(op, "grad_y", grad_y, 4, "(N, C, T, V)");
  check_rank(op, "x", x, 4, "(N, C, T, V)");
  check_floating(op, "x", x);
  check_same_dtype(op, "grad_y", grad_y, "x", x);
  check_same_device(op, "grad_y", grad_y, "x", x);
  TORCH_CHECK(grad_y.sizes() == x.sizes(), op, ": grad_y and x must have the same shape, got ",
              grad_y.sizes(), " and ", x.sizes());
  check_broadcastable(op, "topology_batch", topology_batch, x.size(0));
  check_broadcastable(op, "topology_channels", topology_channels, x.size(1));
}

}  // namespace skelang

TORCH_LIBRARY_FRAGMENT(skelang, m) {
  // y[n,c,t,u] = sum_v A[n,c,u,v] x[n,c,t,v]; see encoder/graph_aggregate.h.
  m.def("graph_aggregate(Tensor x, Tensor A) -> Tensor");
  // grad_A (topology_batch, topology_channels, V, V) of graph_aggregate.
  m.def(
      "graph_aggregate_grad_topology(Tensor grad_y, Tensor x, int topology_batch, "
      "int topology_channels) -> Tensor");
  // LSE on the composite topology, summed over partitions; see encoder/composite_aggregate.h.
  m.def(
      "composite_aggregate(Tensor x, Tensor phi, Tensor psi, Tensor weight, Tensor bias, "
      "Tensor alpha, Tensor topology) -> Tensor");
  // Gradients with respect to (x, phi, psi, weight, bias, alpha, topology).
  m.def(
      "composite_aggregate_backward(Tensor grad_y, Tensor x, Tensor phi, Tensor psi, "
      "Tensor weight, Tensor bias, Tensor alpha, Tensor topology) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // GSM (axis 3, joints) and GTA (axis 2, frames); see encoder/axis_attention.h.
  m.def("axis_attention(Tensor qkv, Tensor bias, int heads, int axis) -> Tensor");
  // The same and the attention probabilities (S, H, L, L), which training keeps for backward.
  m.def(
      "axis_attention_with_probs(Tensor qkv, Tensor bias, int heads, int axis) -> "
      "(Tensor, Tensor)");
  // Gradients with respect to (qkv, bias); the probabilities are recomputed when not given.
  m.def(
      "axis_attention_backward(Tensor grad_out, Tensor qkv, Tensor bias, Tensor? probs, "
      "int heads, int axis) -> (Tensor, Tensor)");
  // LTC's dilated branches; see encoder/multiscale_temporal_conv.cpp.
  m.def(
      "multiscale_temporal_conv(Tensor x, Tensor weight, Tensor bias, int[] dilations, "
      "int stride) -> Tensor");
}
