// Fuzzes the SMTP command side: the input is a conversation, one command per
// line, played into smtp_protocol. Every reply must be well formed (three
// digits, space or dash, CRLF) and a closed session must stay closed: every
// line after the close gets no reply and the session stays closed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "node/smtp_protocol.hpp"

using namespace mailnet;

namespace {

void check_reply(const std::string& reply) {
  std::size_t pos = 0;
  while (pos < reply.size()) {
    auto eol = reply.find("\r\n", pos);
    if (eol == std::string::npos || eol - pos < 4) std::abort();
    for (std::size_t i = 0; i < 3; ++i)
      if (reply[pos + i] < '0' || reply[pos + i] > '9') std::abort();
    if (reply[pos + 3] != ' ' && reply[pos + 3] != '-') std::abort();
    for (std::size_t i = pos; i < eol; ++i)
      if (reply[i] == '\r' || reply[i] == '\n' || reply[i] == '\0') std::abort();  // nothing echoed raw
    pos = eol + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const domain_config config = [] {
    domain_config d;
    d.name = "jaku.com";
    d.users = {"rey", "finn"};
    d.limits.recipients = 5;
    d.limits.errors = 1000;
    return d;
  }();
  node::smtp_protocol protocol(config, "127.0.0.1");
  std::string_view input(reinterpret_cast<const char*>(data), size);
  bool closed = false;
  while (!input.empty()) {
    auto nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view{} : input.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    node::step s = line.size() > config.limits.command_line ? protocol.on_line_too_long() : protocol.on_line(line);
    if (closed) {
      // The rest of the input comes after the close: it gets no reply and no
      // later call reopens the session, whatever it holds.
      if (!s.reply.empty() || s.next != node::next_step::close) std::abort();
      s = protocol.on_data_end({});
      if (!s.reply.empty() || s.next != node::next_step::close) std::abort();
      s = protocol.on_commit(true, "QUEUEID");
      if (!s.reply.empty() || s.next != node::next_step::close) std::abort();
      continue;
    }
    if (s.next == node::next_step::read_data) {
      s = protocol.on_data_end({line.size() % 3 == 0, line.size() % 5 == 0, line.size() % 60});
      if (s.next == node::next_step::commit) s = protocol.on_commit(line.size() % 2 == 0, "QUEUEID");
    }
    check_reply(s.reply);
    for (const auto& r : protocol.transaction().rcpts) {
      // Whatever was accepted is a clean address: no control bytes reach an envelope.
      for (char c : r.address)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) std::abort();
      if (r.is_local() && (r.mailbox.find('/') != std::string::npos || r.mailbox.front() == '.')) std::abort();
    }
    closed = s.next == node::next_step::close;
  }
  if (closed) {  // also when the close was the last line: one more command after it
    auto s = protocol.on_line("NOOP");
    if (!s.reply.empty() || s.next != node::next_step::close) std::abort();
  }
  return 0;
}
