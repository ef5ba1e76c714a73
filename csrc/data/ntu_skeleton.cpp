#include "data/ntu_skeleton.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <string_view>

namespace skelang {
namespace {

// File content quoted in an error: printable ASCII as is, any other byte as \xNN, so the
// message is valid text whatever the file holds.
std::string printable(std::string_view text) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

// Parses a plain decimal "[-]digits[.digits]" of at most 15 digits followed by a space, a
// tab or the end: the integer of its digits and 10^(fraction digits) are both exact doubles,
// so their quotient is correctly rounded, equal to what strtod gives. Anything else
// (exponents, long mantissas, NaN) returns false and goes to std::from_chars.
inline bool parse_short_decimal(const char* p, const char* end, double* value, const char** stop) {
  static constexpr double kPowersOfTen[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                            1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
  const bool negative = p < end && *p == '-';
  p += negative;
  const char* first = p;
  uint64_t mantissa = 0;
  unsigned digit;
  while (p < end && (digit = static_cast<unsigned char>(*p) - '0') < 10) {
    mantissa = mantissa * 10 + digit;
    ++p;
  }
  int64_t digits = p - first, fraction = 0;
  if (p < end && *p == '.') {
    const char* fraction_start = ++p;
    while (p < end && (digit = static_cast<unsigned char>(*p) - '0') < 10) {
      mantissa = mantissa * 10 + digit;
      ++p;
    }
    fraction = p - fraction_start;
    digits += fraction;
  }
  if (digits == 0 || digits > 15 || (p < end && *p != ' ' && *p != '\t')) return false;
  const double magnitude = static_cast<double>(mantissa) / kPowersOfTen[fraction];
  *value = negative ? -magnitude : magnitude;
  *stop = p;
  return true;
}

// Reads the text one line at a time and numbers on a line with std::from_chars (which
// rounds exactly as strtod does, so values equal those of NTU's own converter).
class LineReader {
 public:
  LineReader(const std::string& text, const std::string& path) : text_(text), path_(path) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw SkeletonParseError(path_ + ":" + std::to_string(line_number_) + ": " + message);
  }

  // Moves to the next line; `what` says what it should hold, for the error at end of file.
  void next_line(const char* what) {
    if (pos_ >= text_.size()) {
      ++line_number_;
      fail(std::string("unexpected end of file, expected ") + what);
    }
    const size_t end = text_.find('\n', pos_);
    const size_t stop = end == std::string::npos ? text_.size() : end;
    line_ = std::string_view(text_).substr(pos_, stop - pos_);
    if (!line_.empty() && line_.back() == '\r') line_.remove_suffix(1);
    pos_ = end == std::string::npos ? text_.size() : end + 1;
    ++line_number_;
    cursor_ = 0;
  }

  // Parses all numbers of the current line as doubles into `out` (appending). The first
  // `finite_values` must be finite; later ones may be NaN (Kinect writes NaN projections
  // for joints it did not track).
  void doubles(std::vector<double>& out, int64_t expected, int64_t finite_values,
               const char* what) {
    int64_t count = 0;
    while (skip_spaces()) {
      double value;
      const char* begin = line_.data() + cursor_;
      const char* end = line_.data() + line_.size();
      if (*begin == '+') ++begin;
      const char* ptr;
      if (!parse_short_decimal(begin, end, &value, &ptr)) {
        auto [stop, ec] = std::from_chars(begin, end, value);
        if (ec != std::errc() || (stop != end && *stop != ' ' && *stop != '\t')) {
          fail(std::string("expected a number in ") + what + ", got '" + token() + "'");
        }
        ptr = stop;
      }
      if (count < finite_values && !std::isfinite(value)) {
        fail(std::string("non-finite value '") + token() + "' in " + what);
      }
      out.push_back(value);
      ++count;
      cursor_ = ptr - line_.data();
    }
    if (count != expected) {
      fail(std::string(what) + " must have " + std::to_string(expected) + " values, got " +
           std::to_string(count));
    }
  }

  // The current line as one non-negative integer (a count).
  int64_t count(const char* what, int64_t max_value) {
    if (!skip_spaces()) fail(std::string("expected ") + what + ", got an empty line");
    int64_t value = -1;
    const char* begin = line_.data() + cursor_;
    const char* end = line_.data() + line_.size();
    auto [ptr, ec] = std::from_chars(begin, end, value);
    if (ec != std::errc() || value < 0)
      fail(std::string("expected ") + what + ", got '" + token() + "'");
    cursor_ = ptr - line_.data();
    if (skip_spaces())
      fail(std::string("expected only ") + what + " on this line, got '" +
           printable(line_.substr(0, 60)) + "'");
    if (value > max_value)
      fail(std::string(what) + " " + std::to_string(value) + " is implausibly large");
    return value;
  }

  uint64_t tracking_id() {
    if (!skip_spaces()) fail("expected a body info line, got an empty line");
    uint64_t value = 0;
    const char* begin = line_.data() + cursor_;
    auto [ptr, ec] = std::from_chars(begin, line_.data() + line_.size(), value);
    if (ec != std::errc()) fail("expected the body's tracking id, got '" + token() + "'");
    cursor_ = ptr - line_.data();
    return value;
  }

  // True when only blank lines remain.
  bool at_end() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
      if (c == '\n') ++line_number_;
      ++pos_;
    }
    return true;
  }

  int64_t line_number() const { return line_number_; }

 private:
  bool skip_spaces() {
    while (cursor_ < line_.size() && (line_[cursor_] == ' ' || line_[cursor_] == '\t')) ++cursor_;
    return cursor_ < line_.size();
  }
  std::string token() const {
    size_t end = cursor_;
    while (end < line_.size() && line_[end] != ' ' && line_[end] != '\t') ++end;
    return printable(line_.substr(cursor_, std::min<size_t>(end - cursor_, 40)));
  }

  const std::string& text_;
  const std::string& path_;
  size_t pos_ = 0;
  int64_t line_number_ = 0;
  std::string_view line_;
  size_t cursor_ = 0;
};

}  // namespace

NtuSkeletonFile parse_ntu_skeleton(const std::string& text, const std::string& path,
                                   int64_t expected_joints) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw SkeletonParseError(path + ":1: empty file, expected the frame count");
  }
  LineReader reader(text, path);
  NtuSkeletonFile file;
  file.num_joints = expected_joints;
  file.joints.reserve(text.size() / 7);  // a joint value takes about 7-10 characters
  reader.next_line("the frame count");
  file.num_frames = reader.count("the frame count", 1 << 20);
  file.bodies_per_frame.reserve(file.num_frames);
  for (int64_t frame = 0; frame < file.num_frames; ++frame) {
    reader.next_line("a body count");
    const int64_t bodies = reader.count("a body count", 64);
    file.bodies_per_frame.push_back(static_cast<int32_t>(bodies));
    for (int64_t b = 0; b < bodies; ++b) {
      reader.next_line("a body info line");
      file.body_frame.push_back(static_cast<int32_t>(frame));
      file.body_id.push_back(reader.tracking_id());
      reader.doubles(file.body_info, NtuSkeletonFile::kInfoValues, 0,
                     "the body info line (after the tracking id)");
      reader.next_line("a joint count");
      const int64_t joints = reader.count("a joint count", 1 << 16);
      if (joints != expected_joints) {
        reader.fail("expected " + std::to_string(expected_joints) + " joints per body, got " +
                    std::to_string(joints));
      }
      for (int64_t j = 0; j < joints; ++j) {
        reader.next_line("a joint line");
        reader.doubles(file.joints, NtuSkeletonFile::kJointValues, 3,
                       "a joint line (x y z must be finite)");
      }
    }
  }
  if (!reader.at_end()) {
    reader.next_line("");
    reader.fail("unexpected content after the " + std::to_string(file.num_frames) +
                " frames the file announced");
  }
  return file;
}

NtuSkeletonFile read_ntu_skeleton_file(const std::string& path, int64_t expected_joints) {
  std::ifstream stream(path, std::ios::binary | std::ios::ate);
  if (!stream) throw SkeletonParseError(path + ": cannot open the file");
  std::string text(static_cast<size_t>(stream.tellg()), '\0');
  stream.seekg(0);
  if (!stream.read(text.data(), static_cast<std::streamsize>(text.size()))) {
    throw SkeletonParseError(path + ": cannot read the file");
  }
  return parse_ntu_skeleton(text, path, expected_joints);
}

}  // namespace skelang
