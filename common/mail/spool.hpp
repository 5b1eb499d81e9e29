// The node's durable queue: one file per message in <domain>/queue/.
// File format: "MAILNET-QUEUE 1 <n>\n", then n bytes of JSON envelope, then
// the message bytes. The envelope is JSON so CR/LF in any field is escaped
// and can never forge a line of the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/mail/durable_file.hpp"

namespace mailnet::node {

struct queued_recipient {
  std::string address;
  std::string domain;
  std::string mailbox;  // non-empty: local delivery
  std::string state = "pending";  // pending | delivered | failed
  std::string last_error;
  friend bool operator==(const queued_recipient&, const queued_recipient&) = default;
};

struct queued_message {
  std::string id;
  std::string mail_from;  // empty: null sender
  std::vector<queued_recipient> rcpts;
  std::int64_t created_ms = 0;
  int attempts = 0;
  std::int64_t next_try_ms = 0;
  std::string last_error;
  std::string message;
  // Every field: a queue file must give back the whole value (tests compare with this).
  friend bool operator==(const queued_message&, const queued_message&) = default;
};

std::string encode_queue_file(const queued_message& m);
// nullopt when the bytes are not a queue file this version wrote.
std::optional<queued_message> decode_queue_file(std::string_view bytes);

class spool {
 public:
  explicit spool(std::filesystem::path dir);

  // Removes what never got a 250 (tmp/) and creates the folders.
  void recover() const;

  // Blocking and durable; throws std::system_error.
  staged_file stage(const queued_message& m) const;  // a new message, to publish with its other copies
  void rewrite(const queued_message& m) const;  // new state of a queued one
  void remove(std::string_view id) const;

  std::vector<std::string> list() const;
  std::optional<queued_message> load(std::string_view id) const;  // nullopt: missing
  void move_to_corrupt(std::string_view id) const;

  std::filesystem::path file(std::string_view id) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace mailnet::node
