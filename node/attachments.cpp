#include "node/attachments.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <iterator>
#include <stdexcept>
#include <unistd.h>

#include "node/durable_file.hpp"

namespace mailnet::node {

namespace {

bool allowed(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == '_' || c == '+';
}

// "photo.jpg" -> {"photo", ".jpg"}; a short trailing extension only, so
// that truncation and the -1, -2 suffixes keep what tells the file's type.
std::pair<std::string, std::string> split_extension(const std::string& name) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0 || name.size() - dot > 16) return {name, ""};
  return {name.substr(0, dot), name.substr(dot)};
}

// Lexically, after normalisation: is path root itself or below it?
bool is_within(const std::filesystem::path& root, const std::filesystem::path& path) {
  auto r = root.lexically_normal(), p = path.lexically_normal();
  auto [ri, pi] = std::mismatch(r.begin(), r.end(), p.begin(), p.end());
  return ri == r.end() || (std::next(ri) == r.end() && ri->empty());  // "root/" ends in an empty element
}

std::string errno_text(const char* what, const std::filesystem::path& p) {
  return std::string(what) + " " + p.string() + ": " + std::strerror(errno);
}

// Writes data to a hidden temporary file, then links it under the first free
// name: link() never replaces, so two attachments with one name both survive
// and no reader ever sees a half-written file under the final name.
std::filesystem::path save_one(const std::filesystem::path& dir, const std::string& name, std::string_view data) {
  const auto tmp = dir / (".tmp-" + unique_name());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(errno_text("cannot create", tmp));
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      auto text = errno_text("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(text);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) {
    auto text = errno_text("cannot write", tmp);
    ::unlink(tmp.c_str());
    throw std::runtime_error(text);
  }
  const auto [stem, ext] = split_extension(name);
  for (int n = 0; n < 1000; ++n) {
    const auto target = dir / (n == 0 ? name : stem + "-" + std::to_string(n) + ext);
    if (!is_within(dir, target) || target.parent_path() != dir) break;  // a sanitised name cannot get here
    if (::link(tmp.c_str(), target.c_str()) == 0) {
      ::unlink(tmp.c_str());
      return target;
    }
    if (errno != EEXIST) {
      auto text = errno_text("cannot create", target);
      ::unlink(tmp.c_str());
      throw std::runtime_error(text);
    }
  }
  ::unlink(tmp.c_str());
  throw std::runtime_error("no free file name for " + name + " in " + dir.string());
}

}  // namespace

std::string sanitize_file_name(std::string_view name) {
  std::string out;
  for (unsigned char c : name) {
    if (allowed(c)) out += static_cast<char>(c);
    else if (out.empty() || out.back() != '_') out += '_';
  }
  // No hidden files, nothing that reads as "." or "..", nothing a shell
  // takes for an option.
  auto first = out.find_first_not_of("._-");
  out = first == std::string::npos ? std::string() : out.substr(first);
  if (out.empty()) return "attachment";
  if (out.size() > max_file_name) {
    auto [stem, ext] = split_extension(out);
    out = stem.substr(0, max_file_name - ext.size()) + ext;
  }
  return out;
}

extraction_result extract_attachments(std::string_view message, const std::filesystem::path& attachments_root,
                                      const std::string& message_name, const mime_limits& limits) {
  extraction_result result;
  auto add_error = [&](const std::string& text) { result.error += (result.error.empty() ? "" : "; ") + text; };
  if (message_name.empty() || sanitize_file_name(message_name) != message_name) {
    add_error("message name not allowed as a folder: " + message_name);
    return result;
  }
  parsed_mail mail = parse_mail(message, limits);
  for (const auto& e : mail.errors) add_error(e);
  if (mail.attachments.empty()) return result;

  const auto dir = attachments_root / message_name;
  try {
    std::filesystem::create_directories(dir);
    // A symlink planted in the run folder must not carry files elsewhere.
    if (!is_within(std::filesystem::canonical(attachments_root), std::filesystem::canonical(dir)))
      throw std::runtime_error(dir.string() + " leads outside " + attachments_root.string());
    for (const auto& a : mail.attachments) {
      const auto name = sanitize_file_name(a.file_name);
      try {
        result.saved.push_back(save_one(dir, name, a.data));
      } catch (const std::exception& e) {
        add_error("attachment '" + name + "': " + e.what());
      }
    }
  } catch (const std::exception& e) {
    add_error(e.what());
  }
  return result;
}

}  // namespace mailnet::node
