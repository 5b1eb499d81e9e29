// `mailnet run FILE`: brings the network up in a fresh folder, plays the
// scenario's steps, says pass or fail for each with the reason, and brings
// it down again (unless --keep). Exit 0 only when every step passed. A folder
// that holds a network brought up with `mailnet up` (the user's mail) is
// refused unless --fresh: exit 2.
#pragma once

#include <filesystem>
#include <optional>

namespace mailnet::launcher {

struct run_options {
  std::filesystem::path file;
  std::optional<std::filesystem::path> dir;  // default: ./run/<name>
  bool keep = false;
  bool fresh = false;  // may empty a folder where a network was brought up by `mailnet up`
};

int run_scenario(const run_options& options);

}  // namespace mailnet::launcher
