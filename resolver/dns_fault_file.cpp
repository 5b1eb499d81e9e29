#include "resolver/dns_fault_file.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <fcntl.h>
#include <stdexcept>
#include <system_error>
#include <unistd.h>

#include "common/faults_json.hpp"
#include "common/json_reader.hpp"
#include "common/private_files.hpp"

namespace mailnet::resolver {

namespace {

// The launcher's file holds a few rules; anything this large is not its.
constexpr std::size_t max_file_size = 1 << 20;

struct closer {
  int fd;
  ~closer() { ::close(fd); }
};

std::string read_private(const std::filesystem::path& file) {
  const closer guard{open_private_file(file, O_RDONLY)};
  const int fd = guard.fd;
  std::string text;
  char chunk[16384];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "read " + file.string());
    if (n == 0) break;
    text.append(chunk, static_cast<std::size_t>(n));
    if (text.size() > max_file_size)
      throw std::runtime_error(file.string() + ": larger than " + std::to_string(max_file_size) + " bytes");
  }
  return text;
}

}  // namespace

run_time_faults read_run_time_faults(const std::filesystem::path& file, const std::vector<std::string>& domains) {
  const std::string text = read_private(file);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(file.string() + ": not JSON: " + e.what());
  }
  const json_reader r(file.string());
  r.expect_object(doc, "$");
  r.only_keys(doc, "$", {"generation", "rules", "cleared"});
  run_time_faults out;
  if (!doc.contains("generation")) r.fail("$.generation", "missing (expected a whole number)");
  out.generation = r.count_at(doc["generation"], "$.generation", 0, UINT64_MAX);
  for (const char* key : {"rules", "cleared"})
    if (!doc.contains(key) || !doc[key].is_array()) r.fail(std::string("$.") + key, "expected an array");
  const auto& rules = doc["rules"];
  for (std::size_t i = 0; i < rules.size(); ++i) {
    const std::string path = "$.rules[" + std::to_string(i) + "]";
    out.added.push_back(read_fault_rule(r, rules[i], path, domains));
    if (out.added.back().stage != fault_stage::dns)
      r.fail(path + ".stage", "expected dns (the resolver's file holds dns rules only)");
  }
  const auto& cleared = doc["cleared"];
  for (std::size_t i = 0; i < cleared.size(); ++i)
    out.cleared.push_back(r.string_at(cleared[i], "$.cleared[" + std::to_string(i) + "]"));
  return out;
}

}  // namespace mailnet::resolver
