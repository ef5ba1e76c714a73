#include "data/preprocess.h"

#include <Eigen/Geometry>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace skelang {
namespace {

// Index of coordinate c of joint v of body m at frame t in a (C, T, V, M) array.
inline int64_t at(const SequenceShape& s, int64_t c, int64_t t, int64_t v, int64_t m) {
  return ((c * s.T + t) * s.V + v) * s.M + m;
}

bool body_present(const float* x, const SequenceShape& s, int64_t t, int64_t m) {
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t v = 0; v < s.V; ++v)
      if (x[at(s, c, t, v, m)] != 0.0f) return true;
  return false;
}

// (T, M) row-major: whether body m is present in frame t.
std::vector<bool> presence(const float* x, const SequenceShape& s) {
  std::vector<bool> present(s.T * s.M);
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t m = 0; m < s.M; ++m) present[t * s.M + m] = body_present(x, s, t, m);
  return present;
}

// Whether joint v of a present body m was detected at frame t: a 2D joint with score 0 was
// not; a 3D joint always was.
inline bool joint_detected(const float* x, const SequenceShape& s, int64_t t, int64_t v,
                           int64_t m) {
  return s.coordinates == 3 || x[at(s, 2, t, v, m)] > 0.0f;
}

// (T, V, M) row-major: body m present at frame t and its joint v detected.
std::vector<bool> detection(const float* x, const SequenceShape& s,
                            const std::vector<bool>& present) {
  std::vector<bool> detected(s.T * s.V * s.M);
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t v = 0; v < s.V; ++v)
      for (int64_t m = 0; m < s.M; ++m)
        detected[(t * s.V + v) * s.M + m] = present[t * s.M + m] && joint_detected(x, s, t, v, m);
  return detected;
}

// The coordinates of a joint (z = 0 for 2D data).
Eigen::Vector3f joint(const float* x, const SequenceShape& s, int64_t t, int64_t v, int64_t m) {
  return {x[at(s, 0, t, v, m)], x[at(s, 1, t, v, m)],
          s.coordinates == 3 ? x[at(s, 2, t, v, m)] : 0.0f};
}

}  // namespace

std::vector<int64_t> present_frames(const float* x, const SequenceShape& s) {
  std::vector<int64_t> frames;
  for (int64_t t = 0; t < s.T; ++t) {
    for (int64_t m = 0; m < s.M; ++m) {
      if (body_present(x, s, t, m)) {
        frames.push_back(t);
        break;
      }
    }
  }
  return frames;
}

Eigen::Matrix3f normalize_skeleton(float* x, const SequenceShape& s, int64_t centre,
                                   int64_t spine_lower, int64_t spine_upper, int64_t left_shoulder,
                                   int64_t right_shoulder, bool rotate, bool scale) {
  // Body 0's presence per frame decides what is measured; every present body is moved.
  // Undetected joints (2D) are never measured.
  const std::vector<bool> present = presence(x, s);
  const std::vector<bool> detected = detection(x, s, present);
  auto seen = [&](int64_t t, int64_t v) { return detected[(t * s.V + v) * s.M]; };  // body 0
  int64_t first = -1, first_centre = -1;
  Eigen::Vector3f up = Eigen::Vector3f::Zero(), across = Eigen::Vector3f::Zero();
  double spine_length = 0;
  int64_t measured = 0;
  for (int64_t t = 0; t < s.T; ++t) {
    if (!present[t * s.M]) continue;
    if (first < 0) first = t;
    if (first_centre < 0 && seen(t, centre)) first_centre = t;
    if (seen(t, spine_upper) && seen(t, spine_lower)) {
      const Eigen::Vector3f spine = joint(x, s, t, spine_upper, 0) - joint(x, s, t, spine_lower, 0);
      up += spine;
      spine_length += spine.norm();
      ++measured;
    }
    if (seen(t, left_shoulder) && seen(t, right_shoulder))
      across += joint(x, s, t, left_shoulder, 0) - joint(x, s, t, right_shoulder, 0);
  }
  Eigen::Matrix3f rotation = Eigen::Matrix3f::Identity();
  if (first < 0) return rotation;  // body 0 never present: nothing to measure
  // The centre joint where it is first seen; if never, the mean of body 0's detected joints
  // in its first frame.
  Eigen::Vector3f origin = Eigen::Vector3f::Zero();
  if (first_centre >= 0) {
    origin = joint(x, s, first_centre, centre, 0);
  } else {
    int64_t count = 0;
    for (int64_t v = 0; v < s.V; ++v)
      if (seen(first, v)) origin += joint(x, s, first, v, 0), ++count;
    if (count > 0) origin /= static_cast<float>(count);
  }
  // Canonical axes as rows: applying `rotation` maps them onto x, y, z.
  if (rotate && s.coordinates == 3 && up.norm() > 1e-6f) {
    const Eigen::Vector3f y_axis = up.normalized();
    Eigen::Vector3f x_axis = across - across.dot(y_axis) * y_axis;
    if (x_axis.norm() < 1e-6f) {  // shoulders along the spine: keep the camera's x
      x_axis = Eigen::Vector3f::UnitX() - y_axis.x() * y_axis;
      if (x_axis.norm() < 1e-6f) x_axis = Eigen::Vector3f::UnitZ() - y_axis.z() * y_axis;
    }
    x_axis.normalize();
    rotation.row(0) = x_axis;
    rotation.row(1) = y_axis;
    rotation.row(2) = x_axis.cross(y_axis);
  }
  const float inverse_scale = scale && measured > 0 && spine_length / measured > 1e-6
                                  ? static_cast<float>(measured / spine_length)
                                  : 1.0f;
  const Eigen::Matrix3f transform = inverse_scale * rotation;
  for (int64_t t = 0; t < s.T; ++t) {
    for (int64_t m = 0; m < s.M; ++m) {
      if (!present[t * s.M + m]) continue;
      for (int64_t v = 0; v < s.V; ++v) {
        if (!detected[(t * s.V + v) * s.M + m]) continue;
        const Eigen::Vector3f p = transform * (joint(x, s, t, v, m) - origin);
        for (int64_t c = 0; c < s.coordinates; ++c) x[at(s, c, t, v, m)] = p[c];
      }
    }
  }
  return rotation;
}

void resample_frames(const float* x, const SequenceShape& s, double start, double step,
                     int64_t num_frames, float* out) {
  const SequenceShape o{s.C, num_frames, s.V, s.M};
  const int64_t frame_size = s.V * s.M;  // values of one coordinate in one frame
  const std::vector<bool> present = presence(x, s);
  const std::vector<bool> detected = detection(x, s, present);
  for (int64_t i = 0; i < num_frames; ++i) {
    const double position = std::clamp(start + i * step, 0.0, static_cast<double>(s.T - 1));
    const int64_t lower = static_cast<int64_t>(std::floor(position));
    const int64_t upper = std::min(lower + 1, s.T - 1);
    const float w = static_cast<float>(position - lower);
    for (int64_t c = 0; c < s.C; ++c) {
      const float* a = x + at(s, c, lower, 0, 0);
      const float* b = x + at(s, c, upper, 0, 0);
      float* y = out + at(o, c, i, 0, 0);
      for (int64_t k = 0; k < frame_size; ++k) y[k] = a[k] + w * (b[k] - a[k]);
    }
    if (position == lower) continue;
    // A joint absent or undetected at either neighbour takes the nearest frame instead of a
    // blend with zeros.
    const int64_t nearest = position - lower < 0.5 ? lower : upper;
    for (int64_t v = 0; v < s.V; ++v)
      for (int64_t m = 0; m < s.M; ++m) {
        if (detected[(lower * s.V + v) * s.M + m] && detected[(upper * s.V + v) * s.M + m])
          continue;
        for (int64_t c = 0; c < s.C; ++c) out[at(o, c, i, v, m)] = x[at(s, c, nearest, v, m)];
      }
  }
}

void minmax_scale(float* x, const SequenceShape& s) {
  const std::vector<bool> present = presence(x, s);
  const std::vector<bool> detected = detection(x, s, present);
  for (int64_t c = 0; c < s.coordinates; ++c) {
    float low = std::numeric_limits<float>::infinity(), high = -low;
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t v = 0; v < s.V; ++v)
        for (int64_t m = 0; m < s.M; ++m)
          if (detected[(t * s.V + v) * s.M + m]) {
            low = std::min(low, x[at(s, c, t, v, m)]);
            high = std::max(high, x[at(s, c, t, v, m)]);
          }
    const float range = high - low;
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t v = 0; v < s.V; ++v)
        for (int64_t m = 0; m < s.M; ++m) {
          if (!detected[(t * s.V + v) * s.M + m]) continue;
          float& value = x[at(s, c, t, v, m)];
          value = range > 0.0f ? 2.0f * (value - low) / range - 1.0f : 0.0f;
        }
  }
}

void apply_linear_transform(float* x, const SequenceShape& s, const Eigen::Matrix3f& matrix) {
  // The first three coordinate planes as a 3 x (T V M) matrix; zeros map to zeros.
  Eigen::Map<Eigen::Matrix<float, 3, Eigen::Dynamic, Eigen::RowMajor>> points(x, 3,
                                                                              s.T * s.V * s.M);
  points = (matrix * points).eval();
}

void compute_stream(const float* x, const SequenceShape& s, Stream stream,
                    const std::vector<int64_t>& parents, int64_t centre, float* out) {
  const int64_t n = s.numel();
  const std::vector<bool> present = presence(x, s);
  const std::vector<bool> detected = detection(x, s, present);
  auto seen = [&](int64_t t, int64_t v, int64_t m) { return detected[(t * s.V + v) * s.M + m]; };
  switch (stream) {
    case Stream::kJoint:
      std::memcpy(out, x, n * sizeof(float));
      break;
    case Stream::kBone:
    case Stream::kBoneDirection:
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t t = 0; t < s.T; ++t)
          for (int64_t v = 0; v < s.V; ++v)
            for (int64_t m = 0; m < s.M; ++m)
              out[at(s, c, t, v, m)] = parents[v] < 0 || !seen(t, v, m) || !seen(t, parents[v], m)
                                           ? 0.0f
                                           : x[at(s, c, t, v, m)] - x[at(s, c, t, parents[v], m)];
      if (stream == Stream::kBoneDirection) {
        for (int64_t t = 0; t < s.T; ++t)
          for (int64_t v = 0; v < s.V; ++v)
            for (int64_t m = 0; m < s.M; ++m) {
              const float length = joint(out, s, t, v, m).norm();
              if (length <= 1e-6f) continue;
              for (int64_t c = 0; c < s.coordinates; ++c) out[at(s, c, t, v, m)] /= length;
            }
      }
      break;
    case Stream::kJointMotion:
    case Stream::kBoneMotion: {
      std::vector<float> source;
      const float* base = x;
      if (stream == Stream::kBoneMotion) {
        source.resize(n);
        compute_stream(x, s, Stream::kBone, parents, centre, source.data());
        base = source.data();
      }
      const int64_t frame_size = s.V * s.M;
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t t = 0; t < s.T; ++t) {
          float* y = out + at(s, c, t, 0, 0);
          if (t + 1 == s.T) {
            std::fill(y, y + frame_size, 0.0f);
            continue;
          }
          const float* a = base + at(s, c, t, 0, 0);
          const float* b = base + at(s, c, t + 1, 0, 0);
          for (int64_t k = 0; k < frame_size; ++k) y[k] = b[k] - a[k];
        }
      // No motion into or out of an absent body or an undetected joint (of the bone's joints,
      // for bone motion): it would be a jump to the origin.
      for (int64_t t = 0; t + 1 < s.T; ++t)
        for (int64_t v = 0; v < s.V; ++v)
          for (int64_t m = 0; m < s.M; ++m) {
            bool moved = seen(t + 1, v, m) && seen(t, v, m);
            if (stream == Stream::kBoneMotion && parents[v] >= 0)
              moved = moved && seen(t + 1, parents[v], m) && seen(t, parents[v], m);
            if (!moved)
              for (int64_t c = 0; c < s.C; ++c) out[at(s, c, t, v, m)] = 0.0f;
          }
      break;
    }
    case Stream::kJointLocal:
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t t = 0; t < s.T; ++t)
          for (int64_t v = 0; v < s.V; ++v)
            for (int64_t m = 0; m < s.M; ++m)
              out[at(s, c, t, v, m)] = seen(t, v, m) && seen(t, centre, m)
                                           ? x[at(s, c, t, v, m)] - x[at(s, c, t, centre, m)]
                                           : 0.0f;
      break;
  }
  // Channels past the coordinates (a detection score) are copied, never differenced.
  for (int64_t c = s.coordinates; c < s.C; ++c)
    std::memcpy(out + at(s, c, 0, 0, 0), x + at(s, c, 0, 0, 0), s.T * s.V * s.M * sizeof(float));
  // Absent bodies and undetected joints stay zeros.
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t v = 0; v < s.V; ++v)
      for (int64_t m = 0; m < s.M; ++m)
        if (!seen(t, v, m))
          for (int64_t c = 0; c < s.C; ++c) out[at(s, c, t, v, m)] = 0.0f;
}

}  // namespace skelang
