// CPU kernels of contrastive_alignment_loss (float32, float64): rows in tiles of kRowTile,
// texts in tiles of kTextTile; each tile's logits come from one matrix product into a
// per-thread buffer and are folded into a running log-sum-exp (forward) or turned into
// softmax gradients at once (backward). The text gradient is summed per row tile, then
// over row tiles in order (the same result for any thread count).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fusion/contrastive_alignment.h"

namespace skelang {
namespace {

constexpr int64_t kRowTile = 64;
constexpr int64_t kTextTile = 512;

std::tuple<at::Tensor, at::Tensor> contrastive_alignment_loss_cpu(const at::Tensor& skeleton_in,
                                                                  const at::Tensor& text_in,
                                                                  const at::Tensor& labels_in,
                                                                  const at::Tensor& log_scale) {
  constexpr const char* op = "skelang::contrastive_alignment_loss";
  check_contrastive_alignment_inputs(op, skeleton_in, text_in, labels_in, log_scale);
  const at::Tensor skeleton = skeleton_in.contiguous(), text = text_in.contiguous();
  const at::Tensor labels = labels_in.contiguous();
  const int64_t N = skeleton.size(0), M = text.size(0);
  at::Tensor logsumexp = at::empty({N}, skeleton.options());
  at::Tensor positive = at::empty({N}, skeleton.options());  // logits[n, labels[n]]
  const int64_t* label = labels.const_data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(label[n] >= 0 && label[n] < M, op, ": labels[", n, "] = ", label[n], " is not a text in [0, ", M, ")");
  AT_DISPATCH_FLOATING_TYPES(skeleton.scalar_type(), "contrastive_alignment_loss_cpu", [&] {
    const scalar_t scale = std::exp(log_scale.item<scalar_t>());
    scalar_t* lse = logsumexp.mutable_data_ptr<scalar_t>();
    scalar_t* pos = positive.mutable_data_ptr<scalar_t>();
    const int64_t row_tiles = (N + kRowTile - 1) / kRowTile;
    at::parallel_for(0, row_tiles, 1, [&](int64_t begin, int64_t end) {
      at::Tensor dots = at::empty({kRowTile, std::min(M, kTextTile)}, skeleton.options());
      std::vector<scalar_t> running_max(kRowTile), running_sum(kRowTile);
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t r0 = tile * kRowTile, rows = std::min(kRowTile, N - r0);
        std::fill(running_max.begin(), running_max.end(), -std::numeric_limits<scalar_t>::infinity());
        std::fill(running_sum.begin(), running_sum.end(), scalar_t(0));
        for (int64_t m0 = 0; m0 < M; m0 += kTextTile) {
          const int64_t texts = std::min(kTextTile, M - m0);
          at::Tensor tile_dots = dots.narrow(0, 0, rows).narrow(1, 0, texts);
          at::mm_out(tile_dots, skeleton.narrow(0, r0, rows), text.narrow(0, m0, texts).t());
          const scalar_t* d = tile_dots.const_data_ptr<scalar_t>();
          const int64_t ld = tile_dots.stride(0);
          for (int64_t r = 0; r < rows; ++r) {
            scalar_t tile_max = -std::numeric_limits<scalar_t>::infinity();
            for (int64_t j = 0; j < texts; ++j) tile_max = std::max(tile_max, scale * d[r * ld + j]);
            const scalar_t new_max = std::max(running_max[r], tile_max);
            scalar_t sum = running_sum[r] * std::exp(running_max[r] - new_max);
            for (int64_t j = 0; j < texts; ++j) sum += std::exp(scale * d[r * ld + j] - new_max);
            running_max[r] = new_max;
            running_sum[r] = sum;
            const int64_t target = label[r0 + r] - m0;
            if (target >= 0 && target < texts) pos[r0 + r] = scale * d[r * ld + target];
          }
        }
        for (int64_t r = 0; r < rows; ++r) lse[r0 + r] = running_max[r] + std::log(running_sum[r]);
      }
    });
  });
  return {(logsumexp - positive).mean(), logsumexp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive_alignment_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& skeleton_in, const at::Tensor& text_in,
    const at::Tensor& labels_in, const at::Tensor& log_scale, const at::Tensor& logsumexp_in) {
  constexpr const char* op = "skelang::contrastive_alignment_loss_backward";
  check_contrastive_alignment_inputs(op, skeleton_in, text_in, labels_in, log_scale);
  const at::Tensor skeleton = skeleton_in.contiguous(), text = text_in.contiguous();
  const at::Tensor labels = labels_in.contiguous(), logsumexp = logsumexp_in.contiguous();
  TORCH_CHECK(logsumexp.dim() == 1 && logsumexp.size(0) == skeleton.size(0), op,
              ": logsumexp must be (N) from the forward, got ", logsumexp.sizes());
  const int64_t N = skeleton.size(0), M = text.size(0), D = skeleton.size(1);
  const int64_t row_tiles = (N + kRowTile - 1) / kRowTile;
  at::Tensor grad_skeleton = at::empty({N, D}, skeleton.options());
  at::Tensor text_partials = at::zeros({row_tiles, M, D}, skeleton.options());  // per row tile
  at::Tensor scale_partials = at::zeros({row_tiles}, skeleton.options());
  const int64_t* label = labels.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(skeleton.scalar_type(), "contrastive_alignment_loss_backward_cpu", [&] {
    const scalar_t scale = std::exp(log_scale.item<scalar_t>());
    const scalar_t g = grad.item<scalar_t>() / scalar_t(N);
    const scalar_t* lse = logsumexp.const_data_ptr<scalar_t>();
    scalar_t* scale_partial = scale_partials.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, row_tiles, 1, [&](int64_t begin, int64_t end) {
      at::Tensor buffer = at::empty({kRowTile, std::min(M, kTextTile)}, skeleton.options());
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t r0 = tile * kRowTile, rows = std::min(kRowTile, N - r0);
        at::Tensor grad_rows = grad_skeleton.narrow(0, r0, rows);
        grad_rows.zero_();
        const at::Tensor skeleton_rows = skeleton.narrow(0, r0, rows);
        double scale_sum = 0;  // sum of G * logits: terms of both signs, summed in double
        for (int64_t m0 = 0; m0 < M; m0 += kTextTile) {
          const int64_t texts = std::min(kTextTile, M - m0);
          at::Tensor G = buffer.narrow(0, 0, rows).narrow(1, 0, texts);
          at::mm_out(G, skeleton_rows, text.narrow(0, m0, texts).t());
          scalar_t* d = G.mutable_data_ptr<scalar_t>();
          const int64_t ld = G.stride(0);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t target = label[r0 + r] - m0;
            for (int64_t j = 0; j < texts; ++j) {
              const scalar_t logit = scale * d[r * ld + j];
              const scalar_t G_rj = g * (std::exp(logit - lse[r0 + r]) - (j == target ? 1 : 0));
              scale_sum += double(G_rj) * double(logit);
              d[r * ld + j] = G_rj;
            }
          }
          // grad_skeleton += scale G text;  text_partial += scale G^T skeleton
          grad_rows.addmm_(G, text.narrow(0, m0, texts), 1, scale);
          text_partials[tile].narrow(0, m0, texts).addmm_(G.t(), skeleton_rows, 1, scale);
        }
        scale_partial[tile] = scalar_t(scale_sum);
      }
    });
  });
  return {grad_skeleton, text_partials.sum(0), scale_partials.sum().view({1})};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CPU, m) {
  m.impl("contrastive_alignment_loss", &contrastive_alignment_loss_cpu);
  m.impl("contrastive_alignment_loss_backward", &contrastive_alignment_loss_backward_cpu);
}

}  // namespace skelang
