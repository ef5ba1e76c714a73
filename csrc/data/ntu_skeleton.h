// Parser of NTU RGB+D raw `.skeleton` files (Kinect v2).
//
// Format, line by line: the frame count; per frame the body count; per body an info line
// of 10 values (tracking id, clipped edges, left hand confidence and state, right hand
// confidence and state, restricted, lean x, lean y, tracking state), the joint count
// (25), and one line per joint of 12 values (x y z, depthX depthY, colorX colorY,
// orientation w x y z, tracking state).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace skelang {

// A malformed file: the message names the file and the line.
class SkeletonParseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NtuSkeletonFile {
  static constexpr int kInfoValues = 9;    // the info line after the tracking id
  static constexpr int kJointValues = 12;  // per joint line
  int64_t num_frames = 0;
  int64_t num_joints = 0;                 // per body (25 for NTU)
  std::vector<int32_t> bodies_per_frame;  // (F,)
  // One record per body per frame, in file order (B records):
  std::vector<int32_t> body_frame;  // (B,) frame index
  std::vector<uint64_t> body_id;    // (B,) Kinect tracking id
  std::vector<double> body_info;    // (B, 9)
  std::vector<double> joints;       // (B, num_joints, 12)
};

// Parses `text` (the whole file); `path` only names the file in errors. Joint coordinates
// x y z must be finite (the other values may be NaN, as Kinect writes them for untracked
// joints); any deviation from the format throws SkeletonParseError.
NtuSkeletonFile parse_ntu_skeleton(const std::string& text, const std::string& path,
                                   int64_t expected_joints = 25);

NtuSkeletonFile read_ntu_skeleton_file(const std::string& path, int64_t expected_joints = 25);

}  // namespace skelang
