// lora_linear's forward and backward with ATen's matrix products; see lora/lora_linear.h.
#include "lora/lora_linear.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <algorithm>

#include "common/checks.h"

namespace skelang {
namespace {

void check_lora_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
                       const at::Tensor& lora_B, const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension (..., in)");
  check_rank(op, "weight", weight, 2, "(out, in)");
  check_rank(op, "lora_A", lora_A, 2, "(r, in)");
  check_rank(op, "lora_B", lora_B, 2, "(out, r)");
  check_floating(op, "x", x);
  check_same_dtype_and_device(op, "x", x,
                              {{"weight", weight}, {"lora_A", lora_A}, {"lora_B", lora_B}});
  const int64_t in = x.size(-1), out = weight.size(0), r = lora_A.size(0);
  TORCH_CHECK(weight.size(1) == in, op, ": weight must be (out, in) with in = ", in,
              " as x's last dimension ", x.sizes(), ", got ", weight.sizes());
  TORCH_CHECK(lora_A.size(1) == in, op, ": lora_A must be (r, in = ", in, "), got ",
              lora_A.sizes());
  TORCH_CHECK(lora_B.size(0) == out && lora_B.size(1) == r, op, ": lora_B must be (out, r) = (",
              out, ", ", r, "), got ", lora_B.sizes());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out, op, ": bias must be (out) = (", out,
                "), got ", bias->sizes());
    check_same_dtype(op, "x", x, "bias", *bias);
  }
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->sizes() == x.sizes(), op, ": mask must have x's shape ", x.sizes(), ", got ",
                mask->sizes());
    TORCH_CHECK(mask->scalar_type() == at::kBool || mask->scalar_type() == x.scalar_type(), op,
                ": mask must be bool (keep = true; fold 1 / (1 - p) into scaling) or x's dtype ",
                x.scalar_type(), ", got ", mask->scalar_type());
    TORCH_CHECK(mask->device() == x.device(), op, ": mask must be on x's device ", x.device(),
                ", got ", mask->device());
  }
}

// (M, last); M is the product of the leading sizes (so a last size of 0 is fine too)
at::Tensor rows(const at::Tensor& t) {
  return t.reshape({c10::multiply_integers(t.sizes().slice(0, t.dim() - 1)), t.size(-1)});
}

// x * mask: a bool mask selects (no float copy of the mask is made), a mask of x's dtype
// multiplies. apply_mask_ writes into x.
at::Tensor apply_mask(const at::Tensor& x, const at::Tensor& mask) {
  if (mask.scalar_type() == at::kBool) return at::where(mask, x, at::scalar_tensor(0, x.options()));
  return x * mask;
}

void apply_mask_(at::Tensor x, const at::Tensor& mask) {  // x: a handle; its data is written
  if (mask.scalar_type() == at::kBool) {
    at::where_out(x, mask, x, at::scalar_tensor(0, x.options()));
  } else {
    x.mul_(mask);
  }
}

// The masked LoRA products go through row blocks of about 2 MiB, so x * mask is made one
// cache-sized block at a time and never as a whole (M, in) tensor: calls
// block(start, end) for consecutive row ranges of `rows` rows of `features` elements.
template <typename Block>
void for_each_row_block(int64_t rows, int64_t features, const Block& block) {
  const int64_t step = std::max<int64_t>(1, (int64_t{1} << 19) / std::max<int64_t>(features, 1));
  for (int64_t start = 0; start < rows; start += step) block(start, std::min(start + step, rows));
}

// (x * mask) A^T: x, mask (M, in), lora_A (r, in) -> (M, r)
at::Tensor masked_down_projection(const at::Tensor& x, const at::Tensor& mask,
                                  const at::Tensor& lora_A) {
  at::Tensor xa = at::empty({x.size(0), lora_A.size(0)}, x.options());
  for_each_row_block(x.size(0), x.size(1), [&](int64_t start, int64_t end) {
    at::Tensor xa_block = xa.slice(0, start, end);
    at::mm_out(xa_block, apply_mask(x.slice(0, start, end), mask.slice(0, start, end)), lora_A.t());
  });
  return xa;
}

// (g B)^T (x * mask): gB (M, r), x, mask (M, in) -> (r, in)
at::Tensor masked_down_projection_grad(const at::Tensor& gB, const at::Tensor& x,
                                       const at::Tensor& mask) {
  at::Tensor grad_A = at::zeros({gB.size(1), x.size(1)}, x.options());
  for_each_row_block(x.size(0), x.size(1), [&](int64_t start, int64_t end) {
    grad_A.addmm_(gB.slice(0, start, end).t(),
                  apply_mask(x.slice(0, start, end), mask.slice(0, start, end)));
  });
  return grad_A;
}

// ((g B) A) * mask: gB (M, r), lora_A (r, in), mask (M, in) -> (M, in)
at::Tensor masked_up_projection_grad(const at::Tensor& gB, const at::Tensor& lora_A,
                                     const at::Tensor& mask) {
  at::Tensor out = at::empty({gB.size(0), lora_A.size(1)}, gB.options());
  for_each_row_block(gB.size(0), lora_A.size(1), [&](int64_t start, int64_t end) {
    at::Tensor block = out.slice(0, start, end);
    at::mm_out(block, gB.slice(0, start, end), lora_A);
    apply_mask_(block, mask.slice(0, start, end));
  });
  return out;
}

std::vector<int64_t> with_last(const at::Tensor& t, int64_t last) {
  std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
  sizes.back() = last;
  return sizes;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> lora_linear_forward(const at::Tensor& x,
                                                       const at::Tensor& weight,
                                                       const std::optional<at::Tensor>& bias,
                                                       const at::Tensor& lora_A,
                                                       const at::Tensor& lora_B, double scaling,
                                                       const std::optional<at::Tensor>& mask) {
  check_lora_inputs("skelang::lora_linear", x, weight, bias, lora_A, lora_B, mask);
  const bool has_mask = mask.has_value() && mask->defined();
  const at::Tensor x2 = rows(x);  // (M, in)
  at::Tensor xa = has_mask ? masked_down_projection(x2, rows(*mask), lora_A)
                           : at::mm(x2, lora_A.t());  // (M, r)
  at::Tensor y = bias.has_value() && bias->defined() ? at::addmm(*bias, x2, weight.t())
                                                     : at::mm(x2, weight.t());  // (M, out)
  y.addmm_(xa, lora_B.t(), /*beta=*/1, /*alpha=*/scaling);
  return {y.view(with_last(x, weight.size(0))), xa.view(with_last(x, lora_A.size(0)))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lora_linear_backward_impl(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& lora_A, const at::Tensor& lora_B, double scaling,
    const std::optional<at::Tensor>& mask, const at::Tensor& xa) {
  constexpr const char* op = "skelang::lora_linear_backward";
  check_lora_inputs(op, x, weight, std::nullopt, lora_A, lora_B, mask);
  TORCH_CHECK(grad_y.sizes() == at::IntArrayRef(with_last(x, weight.size(0))), op,
              ": grad_y must be (..., out) = ", at::IntArrayRef(with_last(x, weight.size(0))),
              ", got ", grad_y.sizes());
  TORCH_CHECK(xa.sizes() == at::IntArrayRef(with_last(x, lora_A.size(0))), op,
              ": xa must be (..., r) = ", at::IntArrayRef(with_last(x, lora_A.size(0))),
              " from the forward, got ", xa.sizes());
  check_same_dtype_and_device(op, "x", x, {{"grad_y", grad_y}, {"xa", xa}});
  const bool has_mask = mask.has_value() && mask->defined();
  const at::Tensor g = rows(grad_y);                            // (M, out)
  const at::Tensor x2 = rows(x);                                // (M, in)
  const at::Tensor gB = at::mm(g, lora_B);                      // (M, r)
  const at::Tensor grad_B = at::mm(g.t(), rows(xa)) * scaling;  // (out, r)
  const at::Tensor grad_A =
      (has_mask ? masked_down_projection_grad(gB, x2, rows(*mask)) : at::mm(gB.t(), x2))
          .mul_(scaling);  // (r, in)
  at::Tensor grad_x;       // (M, in)
  if (has_mask) {
    // ((g B) A) * mask first, then g W accumulated into it by the product itself (beta = s).
    grad_x = masked_up_projection_grad(gB, lora_A, rows(*mask));
    grad_x.addmm_(g, weight, /*beta=*/scaling, /*alpha=*/1);
  } else {
    grad_x = at::mm(g, weight);
    grad_x.addmm_(gB, lora_A, /*beta=*/1, /*alpha=*/scaling);
  }
  return {grad_x.view(x.sizes()), grad_A, grad_B};
}

}  // namespace skelang
