// Output files of the launcher, written so that a crash never leaves a half-written one.
#pragma once

#include <string>

namespace dape::launcher {

// Writes text to path under a temporary name (path.tmp), fsyncs it and renames it into place; creates the
// parent directory when it is missing. Throws dape::Error naming the file; the temporary file is removed on
// failure.
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace dape::launcher
