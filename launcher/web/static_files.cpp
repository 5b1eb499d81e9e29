#include "launcher/web/static_files.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#ifndef MAILNET_WEB_DIR
#define MAILNET_WEB_DIR "launcher/web"
#endif

namespace mailnet::launcher::web {

namespace {

// The libraries the pages load, by the path they load them from: each a file
// of a package pinned in launcher/web/package.json.
constexpr std::array<std::pair<std::string_view, std::string_view>, 1> vendor_files = {{
    {"/vendor/cytoscape.min.js", "node_modules/cytoscape/dist/cytoscape.min.js"},
}};

constexpr std::size_t max_asset_bytes = 8 * 1024 * 1024;

std::string_view extension_type(std::string_view name) {
  const auto dot = name.rfind('.');
  const std::string_view ext = dot == std::string_view::npos ? "" : name.substr(dot + 1);
  if (ext == "html") return "text/html; charset=utf-8";
  if (ext == "js") return "text/javascript; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "png") return "image/png";
  if (ext == "ico") return "image/x-icon";
  return "";
}

// "/name.ext": one plain file name of the static folder, of a type we serve.
bool is_static_name(std::string_view path) {
  if (path.size() < 2 || path.front() != '/') return false;
  const std::string_view name = path.substr(1);
  if (name.front() == '.' || name.size() > 64) return false;
  const bool plain = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
  });
  return plain && name.find("..") == std::string_view::npos && !extension_type(name).empty();
}

std::optional<std::string> read_small_file(const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return std::nullopt;
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) <= max_asset_bytes) {
    out.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (got < out.size()) {
      const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    ::close(fd);
    return out;
  }
  ::close(fd);
  return std::nullopt;
}

}  // namespace

std::filesystem::path asset_folder() {
  if (const char* dir = std::getenv("MAILNET_WEB_DIR"); dir && *dir) return dir;
  return MAILNET_WEB_DIR;
}

bool is_asset_path(const std::string& path) {
  if (path == "/") return true;
  for (const auto& [url, file] : vendor_files)
    if (path == url) return true;
  return is_static_name(path);
}

response asset_response(const std::filesystem::path& folder, const std::string& path) {
  std::filesystem::path file;
  std::string missing;
  for (const auto& [url, relative] : vendor_files)
    if (path == url) {
      file = folder / relative;
      missing = "the dashboard's library " + std::string(relative) + " is not installed under " + folder.string() +
                ": run `npm ci --prefix launcher/web` (scripts/install-deps.sh does)";
    }
  if (file.empty()) {
    const std::string name = path == "/" ? "index.html" : path.substr(1);
    file = folder / "static" / name;
    missing = "no such page or file: " + path;
  }
  auto body = read_small_file(file);
  if (!body) return error_response(404, missing);
  response r;
  r.content_type = std::string(extension_type(file.filename().string()));
  r.body = std::move(*body);
  r.headers.emplace_back("Content-Security-Policy", page_policy);
  return r;
}

}  // namespace mailnet::launcher::web
