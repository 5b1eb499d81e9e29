#include "node/spool.hpp"

#include <charconv>
#include <nlohmann/json.hpp>
#include <system_error>
#include <unistd.h>

#include "common/private_files.hpp"
#include "node/durable_file.hpp"

namespace mailnet::node {

using json = nlohmann::json;

namespace {
constexpr std::string_view magic = "MAILNET-QUEUE 1 ";
constexpr std::string_view suffix = ".msg";
}  // namespace

std::string encode_queue_file(const queued_message& m) {
  json rcpts = json::array();
  for (const auto& r : m.rcpts)
    rcpts.push_back({{"address", r.address}, {"domain", r.domain}, {"mailbox", r.mailbox},
                     {"state", r.state}, {"last_error", r.last_error}});
  json env = {{"id", m.id},           {"from", m.mail_from},        {"rcpts", rcpts},
              {"created_ms", m.created_ms}, {"attempts", m.attempts}, {"next_try_ms", m.next_try_ms},
              {"last_error", m.last_error}, {"size", m.message.size()}};
  // Invalid UTF-8 (8BITMIME senders) is replaced rather than thrown on.
  std::string head = env.dump(-1, ' ', false, json::error_handler_t::replace);
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
    m.id = env.at("id").get<std::string>();
    m.mail_from = env.at("from").get<std::string>();
    for (const auto& r : env.at("rcpts")) {
      queued_recipient q;
      q.address = r.at("address").get<std::string>();
      q.domain = r.at("domain").get<std::string>();
      q.mailbox = r.at("mailbox").get<std::string>();
      q.state = r.at("state").get<std::string>();
      q.last_error = r.at("last_error").get<std::string>();
      if (q.state != "pending" && q.state != "delivered" && q.state != "failed") return std::nullopt;
      m.rcpts.push_back(std::move(q));
    }
    m.created_ms = env.at("created_ms").get<std::int64_t>();
    m.attempts = env.at("attempts").get<int>();
    m.next_try_ms = env.at("next_try_ms").get<std::int64_t>();
    m.last_error = env.at("last_error").get<std::string>();
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
