// What the launcher writes: output files (so that a crash never leaves a half-written one) and progress bars.
#pragma once

#include <chrono>
#include <string>

namespace dape::launcher {

// Writes text to path under a temporary name (path.tmp), fsyncs it and renames it into place; creates the
// parent directory when it is missing. Throws dape::Error naming the file; the temporary file is removed on
// failure.
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace dape::launcher

namespace dape::launcher {

// Numbers in log lines: 1,234,567; 12.3k, 1.23M (per second, the unit added by the caller); 1:05 or 1:02:03.
std::string format_count(long long n);
std::string format_rate(double per_s);
std::string format_duration(double seconds);

// Progress on a terminal: redraws "[####......] text" in place on stderr (fraction clamped to [0, 1]).
void draw_progress_bar(double fraction, const std::string& text);
// Erases the bar's line so that a log line can take its place.
void clear_progress_bar();

// The progress bar of a command that also logs lines to stdout (dape train, dape che eval): drawn only when
// stdout and stderr are both terminals, redrawn at most every 100 ms (always for the last update); clear()
// makes room for a log line and the next update draws it again; the destructor erases it.
class ProgressLine {
 public:
  ProgressLine();
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool enabled() const { return enabled_; }
  void update(double fraction, const std::string& text, bool last = false);
  void clear();

 private:
  bool enabled_, drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace dape::launcher
