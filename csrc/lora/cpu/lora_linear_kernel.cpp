// CPU kernels of lora_linear (float32, float64): BLAS matrix products, the LoRA branch added
// into the base product's output in place.
#include <torch/library.h>

#include "lora/lora_linear.h"

namespace skelang {

TORCH_LIBRARY_IMPL(skelang, CPU, m) {
  m.impl("lora_linear", &lora_linear_forward);
  m.impl("lora_linear_backward", &lora_linear_backward_impl);
}

}  // namespace skelang
