// A fresh folder under the system temp folder for one test, removed after
// it; and reading a file whole. Shared by the unit tests that touch files.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <unistd.h>

namespace mailnet::test {

struct temp_dir {
  std::filesystem::path path;

  explicit temp_dir(std::string_view tag) {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           ("mailnet_test_" + std::string(tag) + "_" + std::to_string(::getpid()) + "_" + std::to_string(++n));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);  // 0700 under any umask, as mailnet's own
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  std::filesystem::path write(const std::string& name, const std::string& data) const {
    std::ofstream(path / name, std::ios::binary) << data;
    return path / name;
  }
};

inline std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace mailnet::test
