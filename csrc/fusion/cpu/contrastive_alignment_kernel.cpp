// CPU kernels of contrastive_alignment_loss (float32, float64): rows in tiles of kRowTile,
// texts in tiles of kTextTile; each tile's logits come from one matrix product into a
// per-thread buffer and are folded into a running log-sum-exp (forward) or turned into
// softmax gradients at once (backward), with ATen's vectorised element-wise ops. The text
// gradient is summed over a fixed number of groups of row tiles, then over the groups in
// order (the same result for any thread count; memory: kGroups x M x D).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/reduced_precision.h"
#include "fusion/contrastive_alignment.h"

namespace skelang {
namespace {

constexpr int64_t kRowTile = 64;
constexpr int64_t kTextTile = 512;
constexpr int64_t kGroups =
    16;  // row tiles are summed in this many fixed groups (any thread count)

std::tuple<at::Tensor, at::Tensor> contrastive_alignment_loss_cpu(const at::Tensor& skeleton_in,
                                                                  const at::Tensor& text_in,
                                                                  const at::Tensor& labels_in,
                                                                  const at::Tensor& log_scale) {
  constexpr const char* op = "skelang::contrastive_alignment_loss";
  check_contrastive_alignment_inputs(op, skeleton_in, text_in, labels_in, log_scale);
  if (is_reduced_float(skeleton_in))
    return to_dtype(contrastive_alignment_loss_cpu(as_float32(skeleton_in), as_float32(text_in),
                                                   labels_in, as_float32(log_scale)),
                    skeleton_in.scalar_type());
  const at::Tensor skeleton = skeleton_in.contiguous(), text = text_in.contiguous();
  const at::Tensor labels = labels_in.contiguous();
  const int64_t N = skeleton.size(0), M = text.size(0);
  check_contrastive_alignment_labels(op, labels, M);
  const double scale = std::exp(log_scale.item<double>());
  at::Tensor logsumexp = at::empty({N}, skeleton.options());
  at::Tensor positive = at::empty({N}, skeleton.options());  // logits[n, labels[n]]
  const int64_t row_tiles = (N + kRowTile - 1) / kRowTile;
  at::parallel_for(0, row_tiles, 1, [&](int64_t begin, int64_t end) {
    at::Tensor buffer = at::empty({kRowTile, std::min(M, kTextTile)}, skeleton.options());
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t r0 = tile * kRowTile, rows = std::min(kRowTile, N - r0);
      at::Tensor running_max =
          at::full({rows}, -std::numeric_limits<double>::infinity(), skeleton.options());
      at::Tensor running_sum = at::zeros({rows}, skeleton.options());
      const at::Tensor tile_labels = labels.narrow(0, r0, rows);
      for (int64_t m0 = 0; m0 < M; m0 += kTextTile) {
        const int64_t texts = std::min(kTextTile, M - m0);
        at::Tensor logits = buffer.narrow(0, 0, rows).narrow(1, 0, texts);
        at::mm_out(logits, skeleton.narrow(0, r0, rows), text.narrow(0, m0, texts).t());
        logits.mul_(scale);
        // the running log-sum-exp: rescale the sum to the new maximum, add this tile
        const at::Tensor new_max = at::maximum(running_max, std::get<0>(logits.max(1)));
        running_sum.mul_((running_max - new_max).exp_())
            .add_((logits - new_max.unsqueeze(1)).exp_().sum(1));
        running_max = new_max;
        const at::Tensor in_tile = (tile_labels >= m0) & (tile_labels < m0 + texts);
        const at::Tensor column = (tile_labels - m0).clamp(0, texts - 1).unsqueeze(1);
        positive.narrow(0, r0, rows)
            .copy_(at::where(in_tile, logits.gather(1, column).squeeze(1),
                             positive.narrow(0, r0, rows)));
      }
      logsumexp.narrow(0, r0, rows).copy_(running_max + running_sum.log());
    }
  });
  return {(logsumexp - positive).mean(), logsumexp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive_alignment_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& skeleton_in, const at::Tensor& text_in,
    const at::Tensor& labels_in, const at::Tensor& log_scale, const at::Tensor& logsumexp_in) {
  constexpr const char* op = "skelang::contrastive_alignment_loss_backward";
  check_contrastive_alignment_inputs(op, skeleton_in, text_in, labels_in, log_scale);
  if (is_reduced_float(skeleton_in))
    return to_dtype(contrastive_alignment_loss_backward_cpu(
                        as_float32(grad), as_float32(skeleton_in), as_float32(text_in), labels_in,
                        as_float32(log_scale), as_float32(logsumexp_in)),
                    skeleton_in.scalar_type());
  check_contrastive_alignment_labels(op, labels_in, text_in.size(0));
  const at::Tensor skeleton = skeleton_in.contiguous(), text = text_in.contiguous();
  const at::Tensor labels = labels_in.contiguous(), logsumexp = logsumexp_in.contiguous();
  TORCH_CHECK(logsumexp.dim() == 1 && logsumexp.size(0) == skeleton.size(0), op,
              ": logsumexp must be (N) from the forward, got ", logsumexp.sizes());
  const int64_t N = skeleton.size(0), M = text.size(0), D = skeleton.size(1);
  const int64_t row_tiles = (N + kRowTile - 1) / kRowTile;
  const int64_t groups = std::min(row_tiles, kGroups);
  const double scale = std::exp(log_scale.item<double>());
  const double g = grad.item<double>() / double(N);
  at::Tensor grad_skeleton = at::empty({N, D}, skeleton.options());
  at::Tensor text_partials =
      at::zeros({groups, M, D}, skeleton.options());  // per group of row tiles
  at::Tensor scale_partials = at::zeros({groups}, skeleton.options().dtype(at::kDouble));
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    at::Tensor buffer = at::empty({kRowTile, std::min(M, kTextTile)}, skeleton.options());
    for (int64_t group = begin; group < end; ++group) {
      for (int64_t tile = group * row_tiles / groups; tile < (group + 1) * row_tiles / groups;
           ++tile) {
        const int64_t r0 = tile * kRowTile, rows = std::min(kRowTile, N - r0);
        at::Tensor grad_rows = grad_skeleton.narrow(0, r0, rows);
        grad_rows.zero_();
        const at::Tensor skeleton_rows = skeleton.narrow(0, r0, rows);
        const at::Tensor tile_labels = labels.narrow(0, r0, rows);
        const at::Tensor tile_lse = logsumexp.narrow(0, r0, rows).unsqueeze(1);
        for (int64_t m0 = 0; m0 < M; m0 += kTextTile) {
          const int64_t texts = std::min(kTextTile, M - m0);
          at::Tensor G = buffer.narrow(0, 0, rows).narrow(1, 0, texts);
          at::mm_out(G, skeleton_rows, text.narrow(0, m0, texts).t());
          G.mul_(scale);  // the logits
          // sum of G * logits, in double: terms of both signs
          const at::Tensor softmax = (G - tile_lse).exp_();
          const at::Tensor in_tile = (tile_labels >= m0) & (tile_labels < m0 + texts);
          const at::Tensor column = (tile_labels - m0).clamp(0, texts - 1).unsqueeze(1);
          softmax.scatter_add_(1, column, -in_tile.to(softmax.scalar_type()).unsqueeze(1));
          softmax.mul_(g);  // G = grad (p - onehot) / N
          scale_partials[group] += (softmax.to(at::kDouble) * G.to(at::kDouble)).sum();
          // grad_skeleton += scale G text;  text partial += scale G^T skeleton
          grad_rows.addmm_(softmax, text.narrow(0, m0, texts), 1, scale);
          text_partials[group].narrow(0, m0, texts).addmm_(softmax.t(), skeleton_rows, 1, scale);
        }
      }
    }
  });
  return {grad_skeleton, text_partials.sum(0),
          scale_partials.sum().to(skeleton.scalar_type()).view({1})};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CPU, m) {
  m.impl("contrastive_alignment_loss", &contrastive_alignment_loss_cpu);
  m.impl("contrastive_alignment_loss_backward", &contrastive_alignment_loss_backward_cpu);
}

}  // namespace skelang
