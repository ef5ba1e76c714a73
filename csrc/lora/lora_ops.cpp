// Schemas of the LoRA operators; see lora/lora_linear.h and lora/dropout_mask.h.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(skelang, m) {
  m.def(
      "lora_linear(Tensor x, Tensor weight, Tensor? bias, Tensor lora_A, Tensor lora_B, float "
      "scaling, "
      "Tensor? mask) -> (Tensor y, Tensor xa)");
  // Gradients with respect to (x, lora_A, lora_B); the frozen weight and bias get none.
  m.def(
      "lora_linear_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor lora_A, Tensor lora_B, "
      "float scaling, Tensor? mask, Tensor xa) -> (Tensor, Tensor, Tensor)");
  // A bool mask of x's shape (true = kept) from a counter-based hash of (seed, index).
  m.def("dropout_mask(Tensor x, float p, int seed) -> Tensor");
}
