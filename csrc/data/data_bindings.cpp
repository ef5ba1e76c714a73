// Python bindings of the data component's C++ helpers (file parsers, geometry).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>

#include "data/data_bindings.h"
#include "data/ntu_skeleton.h"

namespace py = pybind11;

namespace skelang {
namespace {

template <typename T>
py::array_t<T> to_numpy(const std::vector<T>& values, std::vector<py::ssize_t> shape) {
  py::array_t<T> array(shape);
  if (!values.empty()) std::memcpy(array.mutable_data(), values.data(), values.size() * sizeof(T));
  return array;
}

py::dict ntu_skeleton_to_dict(const NtuSkeletonFile& file) {
  const auto B = static_cast<py::ssize_t>(file.body_id.size());
  const auto F = static_cast<py::ssize_t>(file.num_frames);
  const auto V = static_cast<py::ssize_t>(file.num_joints);
  py::dict out;
  out["num_frames"] = file.num_frames;
  out["bodies_per_frame"] = to_numpy(file.bodies_per_frame, {F});
  out["body_frame"] = to_numpy(file.body_frame, {B});
  out["body_id"] = to_numpy(file.body_id, {B});
  out["body_info"] = to_numpy(file.body_info, {B, NtuSkeletonFile::kInfoValues});
  out["joints"] = to_numpy(file.joints, {B, V, NtuSkeletonFile::kJointValues});
  return out;
}

}  // namespace

void bind_data(py::module_& m) {
  py::register_exception<SkeletonParseError>(m, "SkeletonParseError", PyExc_ValueError);

  m.def(
      "parse_ntu_skeleton",
      [](const std::string& path, int64_t expected_joints) {
        NtuSkeletonFile file;
        {
          py::gil_scoped_release release;
          file = read_ntu_skeleton_file(path, expected_joints);
        }
        return ntu_skeleton_to_dict(file);
      },
      py::arg("path"), py::arg("expected_joints") = 25,
      R"(Parse an NTU RGB+D raw .skeleton file.

Returns a dict: num_frames; bodies_per_frame (F,) int32; and one record per body per frame
in file order: body_frame (B,) int32, body_id (B,) uint64 tracking ids, body_info (B, 9)
float64, joints (B, V, 12) float64 (x y z, depthX depthY, colorX colorY, orientation
w x y z, tracking state). Raises SkeletonParseError (a ValueError) naming the file and line.)");

  m.def(
      "parse_ntu_skeleton_text",
      [](const std::string& text, const std::string& name, int64_t expected_joints) {
        NtuSkeletonFile file;
        {
          py::gil_scoped_release release;
          file = parse_ntu_skeleton(text, name, expected_joints);
        }
        return ntu_skeleton_to_dict(file);
      },
      py::arg("text"), py::arg("name") = "<text>", py::arg("expected_joints") = 25,
      "parse_ntu_skeleton on the contents of a file; `name` names it in errors.");
}

}  // namespace skelang
