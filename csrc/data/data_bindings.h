#pragma once

#include <pybind11/pybind11.h>

namespace skelang {

// Adds the data component's helpers to the module skelang._C.
void bind_data(pybind11::module_& module);

}  // namespace skelang
