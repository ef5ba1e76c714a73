// Python bindings of the data component's C++ helpers (file parsers, geometry).
#include "data/data_bindings.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "data/ntu_skeleton.h"
#include "data/preprocess.h"

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

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// The (C, T, V, M) shape of a sequence argument, with a clear error otherwise.
SequenceShape sequence_shape(const FloatArray& x, const char* function, int64_t coordinates = 3) {
  if (x.ndim() != 4) {
    throw py::value_error(std::string(function) + ": x must be a (C, T, V, M) array, got " +
                          std::to_string(x.ndim()) + " dimensions");
  }
  if (coordinates != 2 && coordinates != 3) {
    throw py::value_error(std::string(function) +
                          ": coordinates must be 2 (x y) or 3 (x y z), got " +
                          std::to_string(coordinates));
  }
  const SequenceShape s{x.shape(0), x.shape(1), x.shape(2), x.shape(3), coordinates};
  if (s.C < 3) {
    throw py::value_error(std::string(function) +
                          ": x must have at least 3 channels (x y z, or x y "
                          "score) in its first dimension, got " +
                          std::to_string(s.C));
  }
  return s;
}

void check_joint(const char* function, const char* name, int64_t joint, const SequenceShape& s) {
  if (joint < 0 || joint >= s.V) {
    throw py::value_error(std::string(function) + ": " + name + " = " + std::to_string(joint) +
                          " is not a joint index of a skeleton with " + std::to_string(s.V) +
                          " joints");
  }
}

FloatArray copy_of(const FloatArray& x) {
  FloatArray out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  std::memcpy(out.mutable_data(), x.data(), x.size() * sizeof(float));
  return out;
}

Stream stream_named(const std::string& name) {
  if (name == "joint") return Stream::kJoint;
  if (name == "bone") return Stream::kBone;
  if (name == "joint_motion") return Stream::kJointMotion;
  if (name == "bone_motion") return Stream::kBoneMotion;
  if (name == "joint_local") return Stream::kJointLocal;
  if (name == "bone_direction") return Stream::kBoneDirection;
  throw py::value_error("compute_stream: unknown stream '" + name +
                        "'; known: joint, bone, "
                        "joint_motion, bone_motion, joint_local, bone_direction");
}

}  // namespace

void bind_data(py::module_& module) {
  py::register_exception<SkeletonParseError>(module, "SkeletonParseError", PyExc_ValueError);

  module.def(
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

  module.def(
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

  // Geometry of one sequence x (C, T, V, M) float32; see csrc/data/preprocess.h.
  module.def(
      "present_frames",
      [](const FloatArray& x) {
        const SequenceShape s = sequence_shape(x, "present_frames");
        const std::vector<int64_t> frames = present_frames(x.data(), s);
        return to_numpy(frames, {static_cast<py::ssize_t>(frames.size())});
      },
      py::arg("x"), "Indices (K,) of the frames in which some body is present.");

  module.def(
      "normalize_skeleton",
      [](const FloatArray& x, int64_t centre, int64_t spine_lower, int64_t spine_upper,
         int64_t left_shoulder, int64_t right_shoulder, bool rotate, bool scale,
         int64_t coordinates) {
        const char* fn = "normalize_skeleton";
        const SequenceShape s = sequence_shape(x, fn, coordinates);
        check_joint(fn, "centre", centre, s);
        check_joint(fn, "spine_lower", spine_lower, s);
        check_joint(fn, "spine_upper", spine_upper, s);
        check_joint(fn, "left_shoulder", left_shoulder, s);
        check_joint(fn, "right_shoulder", right_shoulder, s);
        FloatArray out = copy_of(x);
        const Eigen::Matrix3f rotation =
            normalize_skeleton(out.mutable_data(), s, centre, spine_lower, spine_upper,
                               left_shoulder, right_shoulder, rotate, scale);
        py::array_t<float> matrix({3, 3});
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) matrix.mutable_at(i, j) = rotation(i, j);
        return py::make_tuple(out, matrix);
      },
      py::arg("x"), py::arg("centre"), py::arg("spine_lower"), py::arg("spine_upper"),
      py::arg("left_shoulder"), py::arg("right_shoulder"), py::arg("rotate") = true,
      py::arg("scale") = false, py::arg("coordinates") = 3,
      "Centre, rotate to the canonical body frame (3D only) and scale; returns (x', rotation (3, "
      "3)).");

  module.def(
      "resample_frames",
      [](const FloatArray& x, double start, double step, int64_t num_frames, int64_t coordinates) {
        const SequenceShape s = sequence_shape(x, "resample_frames", coordinates);
        if (s.T < 1) throw py::value_error("resample_frames: x has no frame");
        if (num_frames < 1) throw py::value_error("resample_frames: num_frames must be positive");
        FloatArray out({s.C, num_frames, s.V, s.M});
        resample_frames(x.data(), s, start, step, num_frames, out.mutable_data());
        return out;
      },
      py::arg("x"), py::arg("start"), py::arg("step"), py::arg("num_frames"),
      py::arg("coordinates") = 3,
      "Frames at start + i * step (i < num_frames), linearly interpolated: (C, num_frames, V, M).");

  module.def(
      "minmax_scale",
      [](const FloatArray& x, int64_t coordinates) {
        const SequenceShape s = sequence_shape(x, "minmax_scale", coordinates);
        FloatArray out = copy_of(x);
        minmax_scale(out.mutable_data(), s);
        return out;
      },
      py::arg("x"), py::arg("coordinates") = 3,
      "Each coordinate mapped onto [-1, 1] by its minimum and maximum over the sequence's present "
      "bodies and detected joints (CTR-GCN's NW-UCLA normalisation).");

  module.def(
      "apply_linear_transform",
      [](const FloatArray& x, const FloatArray& matrix) {
        const SequenceShape s = sequence_shape(x, "apply_linear_transform");
        if (matrix.ndim() != 2 || matrix.shape(0) != 3 || matrix.shape(1) != 3) {
          throw py::value_error("apply_linear_transform: matrix must be 3 x 3");
        }
        Eigen::Matrix3f m;
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) m(i, j) = matrix.at(i, j);
        FloatArray out = copy_of(x);
        apply_linear_transform(out.mutable_data(), s, m);
        return out;
      },
      py::arg("x"), py::arg("matrix"), "x y z of every joint multiplied by matrix (3, 3).");

  module.def(
      "compute_stream",
      [](const FloatArray& x, const std::string& stream, const std::vector<int64_t>& parents,
         int64_t centre, int64_t coordinates) {
        const SequenceShape s = sequence_shape(x, "compute_stream", coordinates);
        const Stream kind = stream_named(stream);
        if (static_cast<int64_t>(parents.size()) != s.V) {
          throw py::value_error("compute_stream: parents must list " + std::to_string(s.V) +
                                " joints, got " + std::to_string(parents.size()));
        }
        for (int64_t parent : parents) {
          if (parent < -1 || parent >= s.V)
            throw py::value_error("compute_stream: parent index out of range");
        }
        check_joint("compute_stream", "centre", centre, s);
        FloatArray out({s.C, s.T, s.V, s.M});
        compute_stream(x.data(), s, kind, parents, centre, out.mutable_data());
        return out;
      },
      py::arg("x"), py::arg("stream"), py::arg("parents"), py::arg("centre"),
      py::arg("coordinates") = 3, "One input stream of x (see skelang.data.preprocess).");
}

}  // namespace skelang
