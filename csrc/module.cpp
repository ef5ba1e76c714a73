// skelang._C: declares the `skelang` operator library (each component adds its schemas with
// TORCH_LIBRARY_FRAGMENT in csrc/<component>/) and exposes non-tensor helpers to Python.
#include <ATen/core/dispatch/Dispatcher.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <map>
#include <string>
#include <vector>

#include "common/multiversion.h"
#include "data/data_bindings.h"

TORCH_LIBRARY(skelang, m) {}

namespace {

// Names of the registered skelang::* operators, and the devices each has kernels for.
std::map<std::string, std::vector<std::string>> registered_ops() {
  std::map<std::string, std::vector<std::string>> ops;
  for (const c10::OperatorName& name : c10::Dispatcher::singleton().getAllOpNames()) {
    if (name.name.rfind("skelang::", 0) != 0) continue;
    auto handle = c10::Dispatcher::singleton().findOp(name);
    std::vector<std::string> devices;
    for (auto key : {c10::DispatchKey::CPU, c10::DispatchKey::CUDA}) {
      if (handle && handle->hasKernelForDispatchKey(key)) devices.emplace_back(c10::toString(key));
    }
    // ops composed of ATen calls run on every device ATen does
    if (devices.empty() && handle &&
        handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd))
      devices.emplace_back("composite of ATen ops (every device)");
    ops[name.name.substr(9)] = devices;
  }
  return ops;
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "skelang's C++ core: operators in torch.ops.skelang, and build information";
  module.def(
      "torch_version", [] { return std::string(SKELANG_TORCH_VERSION); },
      "The torch version this extension was compiled against.");
  module.def(
      "with_cuda",
      [] {
#ifdef SKELANG_WITH_CUDA
        return true;
#else
        return false;
#endif
      },
      "Whether the CUDA kernels were compiled into this build.");
  module.def(
      "registered_ops", &registered_ops,
      "skelang operator names mapped to the devices (CPU, CUDA) that have kernels for them, or to "
      "'composite of ATen ops (every device)'.");
  module.def(
      "cpu_level", [] { return skelang::cpu_level(); },
      "The instruction set of the kernels dispatched at run time (graph_aggregate's and "
      "nearest_code's): 4 (x86-64-v4, AVX-512), 3 (x86-64-v3, AVX2) or 0 (baseline, or not GCC "
      "on x86-64); "
      "SKELANG_CPU_LEVEL lowers it.");
  skelang::bind_data(module);
}
