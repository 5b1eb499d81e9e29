#include "common/mail/spool.hpp"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <system_error>
#include <unistd.h>

#include "common/private_files.hpp"
#include "common/mail/durable_file.hpp"

namespace mailnet::node {

using json = nlohmann::json;

namespace {
constexpr std::string_view magic = "MAILNET-QUEUE 1 ";
constexpr std::string_view suffix = ".msg";

// A JSON string holds UTF-8 only. A field that is not valid UTF-8 (a raw
// 8-bit reply text, an address from an older node) is written as
// {"hex":"fffe"} so it comes back byte for byte: a replaced byte made relay
// and bounce use different addresses. Valid UTF-8 stays a plain string, as
// in files written before.
json bytes_field(const std::string& s) {
  if (std::all_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x80; })) return s;
  try {
    (void)json(s).dump();  // the same UTF-8 check the file's dump makes
    return s;
  } catch (const json::type_error&) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(s.size() * 2);
    for (unsigned char c : s) {
      hex += digits[c >> 4];
      hex += digits[c & 0xF];
    }
    return json{{"hex", std::move(hex)}};
  }
}

// Throws json::exception for anything but a string or a well-formed {"hex"}.
std::string bytes_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  const auto& hex = v.at("hex").get_ref<const std::string&>();
  if (hex.size() % 2 != 0) throw json::other_error::create(501, "odd hex field", &v);
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw json::other_error::create(501, "bad hex field", &v);
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) out += static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1]));
  return out;
}
}  // namespace

std::string encode_queue_file(const queued_message& m) {
  json rcpts = json::array();
  for (const auto& r : m.rcpts)
    rcpts.push_back({{"address", bytes_field(r.address)}, {"domain", bytes_field(r.domain)},
                     {"mailbox", bytes_field(r.mailbox)}, {"state", r.state},
                     {"last_error", bytes_field(r.last_error)}});
  json env = {{"id", bytes_field(m.id)}, {"from", bytes_field(m.mail_from)}, {"rcpts", rcpts},
              {"created_ms", m.created_ms}, {"attempts", m.attempts}, {"next_try_ms", m.next_try_ms},
              {"last_error", bytes_field(m.last_error)}, {"size", m.message.size()}};
  // Every field is valid UTF-8 by now (bytes_field); strict, so a byte is never replaced.
  std::string head = env.dump(-1, ' ', false, json::error_handler_t::strict);
  std::string out;
  out.reserve(magic.size() + 24 + head.size() + m.message.size());
  out += magic;
  out += std::to_string(head.size());
  out += '\n';
  out += head;
  out += m.message;
  return out;
}

std::optional<queued_message> decode_queue_file(std::string_view bytes) {
  if (bytes.substr(0, magic.size()) != magic) return std::nullopt;
  bytes.remove_prefix(magic.size());
  auto nl = bytes.find('\n');
  if (nl == std::string_view::npos || nl > 12) return std::nullopt;
  std::size_t head_len = 0;
  auto [ptr, ec] = std::from_chars(bytes.data(), bytes.data() + nl, head_len);
  if (ec != std::errc() || ptr != bytes.data() + nl) return std::nullopt;
  bytes.remove_prefix(nl + 1);
  if (head_len > bytes.size()) return std::nullopt;
  try {
    json env = json::parse(bytes.substr(0, head_len));
    queued_message m;
    m.id = bytes_of(env.at("id"));
    m.mail_from = bytes_of(env.at("from"));
    for (const auto& r : env.at("rcpts")) {
      queued_recipient q;
      q.address = bytes_of(r.at("address"));
      q.domain = bytes_of(r.at("domain"));
      q.mailbox = bytes_of(r.at("mailbox"));
      q.state = r.at("state").get<std::string>();
      q.last_error = bytes_of(r.at("last_error"));
      if (q.state != "pending" && q.state != "delivered" && q.state != "failed") return std::nullopt;
      m.rcpts.push_back(std::move(q));
    }
    m.created_ms = env.at("created_ms").get<std::int64_t>();
    m.attempts = env.at("attempts").get<int>();
    m.next_try_ms = env.at("next_try_ms").get<std::int64_t>();
    m.last_error = bytes_of(env.at("last_error"));
    auto size = env.at("size").get<std::size_t>();
    if (size != bytes.size() - head_len) return std::nullopt;  // torn or padded
    m.message = std::string(bytes.substr(head_len));
    return m;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

spool::spool(std::filesystem::path dir) : dir_(std::move(dir)) {}

std::filesystem::path spool::file(std::string_view id) const { return dir_ / (std::string(id) + std::string(suffix)); }

void spool::recover() const {
  for (const char* sub : {"tmp", "corrupt"})  // 0700, never through a link
    make_private_folders(dir_.parent_path(), dir_.filename() / sub);
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / "tmp"))
    std::filesystem::remove(entry.path());
}

staged_file spool::stage(const queued_message& m) const {
  return stage_file(dir_ / "tmp" / (m.id + ".new"), file(m.id), encode_queue_file(m), false, false);
}

void spool::rewrite(const queued_message& m) const {
  publish_durably(dir_ / "tmp" / (m.id + "." + unique_name()), file(m.id), encode_queue_file(m), true);
}

void spool::remove(std::string_view id) const {
  if (::unlink(file(id).c_str()) != 0 && errno != ENOENT)
    throw std::system_error(errno, std::generic_category(), "unlink " + file(id).string());
  // No folder fsync: a removal the disk loses in a power cut brings the file
  // back, and the message is delivered twice (at least once, as every MTA);
  // a crash of the node alone cannot undo an unlink. It was one fsync per
  // relayed message.
}

std::vector<std::string> spool::list() const {
  std::vector<std::string> ids;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    auto name = entry.path().filename().string();
    if (entry.is_regular_file() && name.size() > suffix.size() && name.ends_with(suffix))
      ids.push_back(name.substr(0, name.size() - suffix.size()));
  }
  return ids;
}

std::optional<queued_message> spool::load(std::string_view id) const {
  std::string bytes;
  try {
    bytes = read_whole_file(file(id));
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::no_such_file_or_directory) return std::nullopt;
    throw;
  }
  auto m = decode_queue_file(bytes);
  if (!m || m->id != id) throw std::runtime_error("queue file " + file(id).string() + " cannot be parsed");
  return m;
}

void spool::move_to_corrupt(std::string_view id) const {
  std::filesystem::rename(file(id), dir_ / "corrupt" / (std::string(id) + std::string(suffix)));
  fsync_directory(dir_);
}

}  // namespace mailnet::node
