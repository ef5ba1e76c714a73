// Skeleton geometry with Eigen, on one sequence at a time.
//
// Every function takes a sequence `x` of shape (C, T, V, M), float32, contiguous (C >= 3
// coordinates, the first three x y z; T frames; V joints; M bodies) and returns a new
// array. A body is absent from a frame when all its coordinates there are zero; absent
// bodies stay zeros through every function. In 2D data (x, y, score) a joint whose score
// is 0 was not detected (OpenPose writes (0, 0, 0)): it stays zero through every function,
// is never measured, and bones, motions and local coordinates that touch it are zero, as
// in ST-GCN's feeder. Randomness stays in Python: augmentations receive the parameters
// they apply.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace skelang {

struct SequenceShape {
  int64_t C, T, V, M;
  int64_t coordinates = 3;  // leading channels that are coordinates: 3 (x y z) or 2 (x y)
  int64_t numel() const { return C * T * V * M; }
};

// Frames in which some body is present, in order.
std::vector<int64_t> present_frames(const float* x, const SequenceShape& s);

// Centre on `centre` (body 0, first frame where it is present), rotate to a canonical body
// frame (y: the mean spine direction lower -> upper of body 0; x: the mean right -> left
// shoulder direction made orthogonal to y; z = x cross y) and divide by the mean spine
// length of body 0. Returns the 3x3 rotation it applied (identity when rotate is false).
// 2D data (s.coordinates == 2) is centred and scaled, never rotated.
Eigen::Matrix3f normalize_skeleton(float* x, const SequenceShape& s, int64_t centre,
                                   int64_t spine_lower, int64_t spine_upper, int64_t left_shoulder,
                                   int64_t right_shoulder, bool rotate, bool scale);

// out (C, num_frames, V, M): frames of x at the positions start + i * step, i < num_frames,
// interpolated linearly between neighbouring frames (positions clamp to [0, T - 1]). A body
// absent, or a 2D joint undetected, at either neighbour takes the nearest frame's values.
void resample_frames(const float* x, const SequenceShape& s, double start, double step,
                     int64_t num_frames, float* out);

// x[0:3] = matrix @ x[0:3] for every joint of every present body (in place).
void apply_linear_transform(float* x, const SequenceShape& s, const Eigen::Matrix3f& matrix);

// Each coordinate (x, y, z; x, y for 2D data) mapped linearly onto [-1, 1] by its minimum
// and maximum over every present body and detected joint of the sequence (in place), as
// CTR-GCN's NW-UCLA feeder does; a coordinate without spread becomes 0.
void minmax_scale(float* x, const SequenceShape& s);

// The input streams (see python/skelang/data/streams.py for their definitions).
enum class Stream { kJoint, kBone, kJointMotion, kBoneMotion, kJointLocal, kBoneDirection };
void compute_stream(const float* x, const SequenceShape& s, Stream stream,
                    const std::vector<int64_t>& parents, int64_t centre, float* out);

}  // namespace skelang
