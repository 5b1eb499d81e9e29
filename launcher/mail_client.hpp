// The pieces of a mail client, for `mailnet send` and the scenario runner:
// build a MIME message (GMime), find a domain's node through the network's
// resolver, and hand a message to a node over SMTP. Blocking sockets with
// deadlines; nothing here needs a running event loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/topology.hpp"

namespace mailnet::launcher {

// One address as people write it: "vader@deathstar.com", "<vader@deathstar.com>",
// "Darth Vader <vader@deathstar.com>" or "\"Vader, Darth\" <vader@deathstar.com>".
struct named_address {
  std::string name;     // may be empty; UTF-8
  std::string address;  // local@domain, as parse_mailbox writes it
};
std::optional<named_address> parse_named_address(std::string_view text);

// A header's list: addresses separated by commas outside quotes and <>.
std::vector<std::string> split_address_list(std::string_view text);

// An attachment given as bytes (the web API's POST /api/v1/send), not a file.
struct attachment_bytes {
  std::string name;          // UTF-8 file name
  std::string content_type;  // "type/subtype"; empty: guessed as for a file
  std::string data;
};

// Addresses may be written either way above; each --to/--cc/--bcc may hold a list.
struct outgoing_mail {
  std::string from;
  std::vector<std::string> to, cc, bcc;  // bcc never appears in the headers
  std::string subject, body;             // UTF-8
  std::vector<std::filesystem::path> attachments;
  std::vector<attachment_bytes> attachment_data;  // after the files
};

// Thrown for mail that cannot be built: an attachment that cannot be read,
// a subject or body that is not UTF-8, a bad address. what() names the
// file or field and the reason.
class mail_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Every address in a field's entries (each may hold a list), parsed; throws
// mail_error naming the field and the first that is not an address.
std::vector<named_address> addresses_of(const std::vector<std::string>& entries, const char* field);

// A whole RFC 5322 message with CRLF line ends: RFC 2047 subject, a
// text/plain; charset=utf-8 body, and each attachment base64 with its
// content type and file name (RFC 2231 when needed).
std::string build_mime(const outgoing_mail& mail);

// "image/jpeg" from the first bytes when they are telling, else from the
// file name's extension, else text/plain for UTF-8 text, else
// application/octet-stream.
std::string guess_content_type(std::string_view data, const std::string& file_name);

struct recipient_result {
  std::string address;
  bool accepted = false;
  std::string queue_id;  // the transaction's that carried it, when accepted
  std::string reply;     // the server's reply to it (or to MAIL, DATA, ...), or what went wrong
};

struct send_result {
  bool ok = false;         // every recipient was accepted
  bool connected = false;  // the server answered at all (else: nothing listens there, or no greeting)
  std::string queue_id;    // from the first "250 ... queued as ID"
  std::string reply;       // the first refusal (or the last reply when ok), or what went wrong on our side
  std::vector<std::string> queue_ids;      // one per transaction that carried the message
  std::vector<recipient_result> rcpts;     // in the order given
};

// The message to every recipient over one connection: EHLO (HELO if
// refused), then transactions of MAIL, RCPT..., DATA. A recipient refused
// with 452 (too many recipients, RFC 5321 §4.5.3.1.10) after others were
// accepted goes into the next transaction, as the relay does; any other
// refusal is that recipient's result, and the others still get the message.
// A refusal of MAIL or DATA is the result of every recipient concerned. The
// message is dot-stuffed here. verbose, when set, gets the dialogue.
//
// With login (a submission listener): after EHLO, STARTTLS with the server's
// certificate checked against ca_file and server_name (else nothing is
// sent), EHLO again, AUTH PLAIN; a refused AUTH is every recipient's result.
struct submission_login {
  std::filesystem::path ca_file;
  std::string server_name;  // the domain the certificate must name
  std::string user, password;
};
send_result send_message(const std::string& host, std::uint16_t port, const std::string& helo_domain,
                         const std::string& from, const std::vector<std::string>& rcpts, const std::string& message,
                         std::ostream* verbose, std::chrono::milliseconds timeout,
                         const submission_login* login = nullptr);

// `mailnet send` and POST /api/v1/send: message (build_mime(mail)) sent to
// target, or to the node of the domain via_domain (else the sender's own)
// found through the resolver, with mail's envelope (bcc included). Throws
// mail_error for a bad address, std::runtime_error when the node cannot be
// found.
struct mail_delivery {
  std::string node_domain;  // the domain whose node took it; empty with an explicit target
  endpoint target;
  send_result result;
};
mail_delivery deliver_mail(const outgoing_mail& mail, const std::string& message, const resolver_settings& resolver, const std::string& via_domain,
                           std::ostream* verbose, std::chrono::milliseconds timeout,
                           const std::optional<endpoint>& target = std::nullopt,
                           const submission_login* login = nullptr);

// Where a domain's node listens, asked of the resolver at `resolver` like a
// node asks it (SRV _smtp._tcp, then the target's address). Throws
// std::runtime_error saying why (no such domain, no answer in time).
endpoint find_domain_node(const endpoint& resolver, const std::string& domain,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(1000), int attempts = 3);

}  // namespace mailnet::launcher
