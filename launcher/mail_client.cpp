// send_message and find_domain_node from mail_client.hpp: blocking POSIX
// sockets, every read and write bounded by poll() and a deadline.
#include "launcher/mail_client.hpp"

#include "launcher/resolve_command.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <memory>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>

#include "common/address.hpp"
#include "common/openssl_ptr.hpp"
#include "common/terminal_text.hpp"
#include "common/mail/data_reader.hpp"
#include "common/dns/dns_message.hpp"

namespace mailnet::launcher {

namespace {

using steady = std::chrono::steady_clock;

struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

struct io_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string sys_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// Waits for events on fd until deadline; throws io_error naming `what` on timeout.
void wait_for(int fd, short events, steady::time_point deadline, const std::string& what) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count();
    if (left <= 0) throw io_error("timed out " + what);
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw io_error(sys_text("poll"));
    if (r > 0) return;
  }
}

struct reply {
  int code = 0;
  std::string text;  // every line, joined with '\n', without CRLF
};

class smtp_connection {
 public:
  smtp_connection(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout, std::ostream* verbose)
      : timeout_(timeout), verbose_(verbose) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
      throw io_error("cannot resolve " + host + ": " + ::gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(found, &::freeaddrinfo);
    const std::string where = host + ":" + std::to_string(port);
    // Every address of the name in turn ("localhost" may be ::1 first while
    // the node listens on 127.0.0.1); the last one's error is reported.
    for (const addrinfo* a = found; a; a = a->ai_next) {
      try {
        connect_to(a, where);
        if (verbose_) *verbose_ << "-- connected to " << where << "\n";
        return;
      } catch (const io_error&) {
        if (!a->ai_next) throw;
      }
    }
    throw io_error("cannot connect to " + where + ": no address");
  }

  void connect_to(const addrinfo* a, const std::string& where) {
    fd_closer s;
    s.fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s.fd < 0) throw io_error(sys_text("socket"));
    if (::connect(s.fd, a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) throw io_error(sys_text("cannot connect to " + where));
      wait_for(s.fd, POLLOUT, steady::now() + timeout_, "connecting to " + where);
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) throw io_error("cannot connect to " + where + ": " + std::strerror(err));
    }
    std::swap(fd_.fd, s.fd);  // a socket left by an earlier try is closed with s
  }

  reply read_reply() {
    const auto deadline = steady::now() + timeout_;
    reply r;
    for (;;) {
      auto eol = buffer_.find("\r\n");
      if (eol == std::string::npos) {
        if (buffer_.size() > 65536) throw io_error("server reply line too long");
        fill(deadline);
        continue;
      }
      std::string line = buffer_.substr(0, eol);
      buffer_.erase(0, eol + 2);
      if (verbose_) *verbose_ << "S: " << terminal_safe(line) << "\n";  // the server's words
      r.text += (r.text.empty() ? "" : "\n") + line;
      if (line.size() < 3 || !std::isdigit(static_cast<unsigned char>(line[0])))
        throw io_error("not an SMTP reply: " + line);
      r.code = std::stoi(line.substr(0, 3));
      if (line.size() == 3 || line[3] != '-') return r;  // RFC 5321 §4.2.1: the last line has no '-'
    }
  }

  // shown: what verbose prints instead of line (credentials).
  reply command(const std::string& line, const char* shown = nullptr) {
    if (verbose_) *verbose_ << "C: " << (shown ? shown : line) << "\n";
    write_all(line + "\r\n");
    return read_reply();
  }

  // After the server's 220 to STARTTLS: the handshake, the certificate
  // checked against ca_file and name. Throws io_error saying why.
  void start_tls(const std::filesystem::path& ca_file, const std::string& name) {
    if (!buffer_.empty()) throw io_error("the server sent more after its 220 to STARTTLS");
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!ctx_) throw io_error("cannot make a TLS context");
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx_.get(), ca_file.c_str(), nullptr) != 1)
      throw io_error("cannot read the network's CA " + ca_file.string());
    ssl_.reset(SSL_new(ctx_.get()));
    if (!ssl_ || SSL_set_fd(ssl_.get(), fd_.fd) != 1) throw io_error("cannot start TLS");
    SSL_set_tlsext_host_name(ssl_.get(), name.c_str());
    SSL_set_hostflags(ssl_.get(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl_.get(), name.c_str()) != 1) throw io_error("cannot check the name " + name);
    const auto deadline = steady::now() + timeout_;
    for (int round = 0;; ++round) {  // bounded by the deadline
      const int rc = SSL_connect(ssl_.get());
      if (rc == 1) break;
      const int err = SSL_get_error(ssl_.get(), rc);
      if (err == SSL_ERROR_WANT_READ) wait_for(fd_.fd, POLLIN, deadline, "the TLS handshake");
      else if (err == SSL_ERROR_WANT_WRITE) wait_for(fd_.fd, POLLOUT, deadline, "the TLS handshake");
      else {
        const long verify = SSL_get_verify_result(ssl_.get());
        std::string why = verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "handshake failed";
        ERR_clear_error();
        ssl_.reset();
        throw io_error("TLS with " + name + " failed: " + why);
      }
    }
    if (verbose_) *verbose_ << "-- TLS started: " << SSL_get_version(ssl_.get()) << " " << SSL_get_cipher_name(ssl_.get())
                            << ", certificate verified for " << name << "\n";
  }

  void write_all(std::string_view data) {
    const auto deadline = steady::now() + timeout_;
    while (ssl_ && !data.empty()) {
      const int n = SSL_write(ssl_.get(), data.data(), static_cast<int>(std::min<std::size_t>(data.size(), 1 << 20)));
      if (n > 0) {
        data.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      const int err = SSL_get_error(ssl_.get(), n);
      if (err == SSL_ERROR_WANT_WRITE) wait_for(fd_.fd, POLLOUT, deadline, "sending to the server");
      else if (err == SSL_ERROR_WANT_READ) wait_for(fd_.fd, POLLIN, deadline, "sending to the server");
      else throw io_error("TLS write failed");
    }
    while (!data.empty()) {
      ssize_t n = ::send(fd_.fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wait_for(fd_.fd, POLLOUT, deadline, "sending to the server");
        continue;
      }
      if (n < 0) throw io_error(sys_text("send"));
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }


 private:
  void fill(steady::time_point deadline) {
    if (ssl_) {
      char buf[8192];
      const int n = SSL_read(ssl_.get(), buf, sizeof buf);
      if (n > 0) {
        buffer_.append(buf, static_cast<std::size_t>(n));
        return;
      }
      const int err = SSL_get_error(ssl_.get(), n);
      if (err == SSL_ERROR_WANT_READ) wait_for(fd_.fd, POLLIN, deadline, "waiting for the server's reply");
      else if (err == SSL_ERROR_WANT_WRITE) wait_for(fd_.fd, POLLOUT, deadline, "waiting for the server's reply");
      else if (err == SSL_ERROR_ZERO_RETURN) throw io_error("the server closed the connection");
      else throw io_error("TLS read failed");
      return;
    }
    wait_for(fd_.fd, POLLIN, deadline, "waiting for the server's reply");
    char buf[8192];
    ssize_t n = ::recv(fd_.fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n < 0) throw io_error(sys_text("recv"));
    if (n == 0) throw io_error("the server closed the connection");
    buffer_.append(buf, static_cast<std::size_t>(n));
  }

  fd_closer fd_;
  ssl_ctx_ptr ctx_;
  ssl_ptr ssl_;  // declared after fd_: freed before the socket closes
  std::string buffer_;
  std::chrono::milliseconds timeout_;
  std::ostream* verbose_;
};

std::string base64(std::string_view data) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < data.size(); i += 3) {
    std::uint32_t v = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) v |= static_cast<unsigned char>(data[i + 1]) << 8;
    if (i + 2 < data.size()) v |= static_cast<unsigned char>(data[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < data.size() ? alphabet[(v >> 6) & 63] : '=';
    out += i + 2 < data.size() ? alphabet[v & 63] : '=';
  }
  return out;
}

bool offers(const std::string& ehlo_text, std::string_view keyword) {
  std::size_t pos = 0;
  while (pos < ehlo_text.size()) {
    auto eol = ehlo_text.find('\n', pos);
    std::string line = ehlo_text.substr(pos + 4 > ehlo_text.size() ? ehlo_text.size() : pos + 4,
                                        eol == std::string::npos ? std::string::npos : eol - pos - 4);
    for (auto& c : line) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (line == keyword || line.rfind(std::string(keyword) + " ", 0) == 0) return true;
    if (eol == std::string::npos) break;
    pos = eol + 1;
  }
  return false;
}

std::string queue_id_of(const std::string& text) {
  auto at = text.find("queued as ");
  if (at == std::string::npos) return {};
  auto id = text.substr(at + 10);
  return id.substr(0, id.find_first_of(" \r\n"));
}

}  // namespace

send_result send_message(const std::string& host, std::uint16_t port, const std::string& helo_domain,
                         const std::string& from, const std::vector<std::string>& rcpts, const std::string& message,
                         std::ostream* verbose, std::chrono::milliseconds timeout, const submission_login* login) {
  send_result result;
  if (rcpts.empty()) {
    result.reply = "no recipient: give at least one --to, --cc or --bcc";
    return result;
  }
  for (const auto& a : rcpts) result.rcpts.push_back({a, false, {}, {}});
  std::size_t next = 0;  // the first recipient not yet settled
  // Settles every recipient from `from_index` on that has no reply yet.
  auto settle_rest = [&](std::size_t from_index, const std::string& why) {
    for (std::size_t i = from_index; i < result.rcpts.size(); ++i)
      if (!result.rcpts[i].accepted && result.rcpts[i].reply.empty()) result.rcpts[i].reply = why;
  };
  try {
    smtp_connection smtp(host, port, timeout, verbose);
    auto quit = [&] {
      try {
        smtp.command("QUIT");
      } catch (const io_error&) {
        // a lost goodbye changes nothing
      }
    };
    bool closed = false;  // QUIT said, or a 421 heard: nothing more goes to the server
    reply r = smtp.read_reply();
    result.connected = true;
    if (r.code != 220) {
      settle_rest(0, r.text);
      quit();
      closed = true;
      next = rcpts.size();
    } else {
      r = smtp.command("EHLO " + helo_domain);
      if (r.code / 100 == 5) r = smtp.command("HELO " + helo_domain);  // RFC 5321 §3.2: an old server
      if (r.code != 250) {
        settle_rest(0, r.text);
        next = rcpts.size();
      } else if (login) {
        // Submission: STARTTLS with the certificate checked, EHLO again, AUTH PLAIN.
        if (!offers(r.text, "STARTTLS")) r.text = "the server does not offer STARTTLS, needed before AUTH";
        else r = smtp.command("STARTTLS");
        if (r.code == 220) {
          smtp.start_tls(login->ca_file, login->server_name);
          r = smtp.command("EHLO " + helo_domain);
          if (r.code == 250)
            r = smtp.command("AUTH PLAIN " + base64(std::string(1, '\0') + login->user + '\0' + login->password),
                             "AUTH PLAIN <credentials>");
        }
        if (r.code != 235) {
          settle_rest(0, r.text);
          next = rcpts.size();
        }
      }
    }
    const std::string wire = node::dot_stuff_for_wire(message) + ".\r\n";
    // Each round settles at least one recipient, so rcpts.size() rounds end it.
    for (std::size_t round = 0; next < rcpts.size() && round <= rcpts.size(); ++round) {
      r = smtp.command("MAIL FROM:<" + from + ">");
      if (r.code != 250) {
        settle_rest(next, r.text);
        closed = r.code == 421;
        break;
      }
      std::vector<std::size_t> taken;
      std::size_t i = next;
      bool closing = false;  // 421: the server closes the connection (RFC 5321 §3.8)
      for (; i < rcpts.size(); ++i) {
        r = smtp.command("RCPT TO:<" + rcpts[i] + ">");
        if (r.code == 250 || r.code == 251) {
          taken.push_back(i);
          continue;
        }
        if (r.code == 452 && !taken.empty()) break;  // the rest go in the next transaction
        result.rcpts[i].reply = r.text;
        if (r.code == 421) {
          closing = true;
          break;
        }
      }
      next = i;
      if (closing) {
        for (auto k : taken) result.rcpts[k].reply = r.text;  // no DATA for them
        settle_rest(i, r.text);
        next = rcpts.size();
        closed = true;
        break;
      }
      if (taken.empty()) {
        smtp.command("RSET");
        continue;
      }
      r = smtp.command("DATA");
      if (r.code == 354) {
        if (verbose) *verbose << "C: (message, " << message.size() << " bytes)\nC: .\n";
        smtp.write_all(wire);
        r = smtp.read_reply();
      }
      if (r.code != 250) {
        for (auto k : taken) result.rcpts[k].reply = r.text;
        if (r.code == 421) {  // the server is closing: the rest get its reply, no RSET, no QUIT
          settle_rest(next, r.text);
          next = rcpts.size();
          closed = true;
          break;
        }
        if (r.code / 100 != 4 && r.code / 100 != 5) break;  // not an SMTP answer we can go on from
        smtp.command("RSET");
        continue;
      }
      const auto id = queue_id_of(r.text);
      result.queue_ids.push_back(id);
      for (auto k : taken) {
        result.rcpts[k].accepted = true;
        result.rcpts[k].queue_id = id;
        result.rcpts[k].reply = r.text;
      }
    }
    settle_rest(next, "not sent: the transaction could not go on");
    if (!closed) quit();
  } catch (const std::exception& e) {
    settle_rest(0, e.what());
  }
  result.ok = !result.rcpts.empty() &&
              std::all_of(result.rcpts.begin(), result.rcpts.end(), [](const recipient_result& x) { return x.accepted; });
  for (const auto& x : result.rcpts)
    if (!x.accepted) {
      result.reply = x.reply;
      break;
    }
  if (result.ok) result.reply = result.rcpts.back().reply;
  if (!result.queue_ids.empty()) result.queue_id = result.queue_ids.front();
  return result;
}

endpoint find_domain_node(const endpoint& resolver, const std::string& domain, std::chrono::milliseconds timeout,
                          int attempts) {
  // The nodes' own resolver client, so that `mailnet send` routes exactly as a node would.
  auto result = lookup_mail_route(resolver, timeout, attempts, domain);
  if (result.status == node::lookup_status::nxdomain)
    throw std::runtime_error("domain " + node::canonical_name(domain) + " is not in this network (" + result.detail + ")");
  if (result.status != node::lookup_status::ok || result.routes.empty())
    throw std::runtime_error("the resolver at " + resolver.to_string() + " did not answer for " + domain + ": " +
                             result.detail);
  return {result.routes.front().host, result.routes.front().port};
}

std::optional<named_address> parse_named_address(std::string_view text) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  text = trim(text);
  named_address out;
  std::string_view address = text;
  if (!text.empty() && text.back() == '>') {
    const auto open = text.rfind('<');
    if (open == std::string_view::npos) return std::nullopt;
    address = text.substr(open + 1, text.size() - open - 2);
    std::string_view name = trim(text.substr(0, open));
    if (name.size() >= 2 && name.front() == '"' && name.back() == '"') name = name.substr(1, name.size() - 2);
    if (name.find_first_of("\"<>\r\n") != std::string_view::npos) return std::nullopt;
    out.name = std::string(name);
  }
  auto box = parse_mailbox(trim(address));
  if (!box) return std::nullopt;
  out.address = box->to_string();
  return out;
}

std::vector<named_address> addresses_of(const std::vector<std::string>& entries, const char* field) {
  std::vector<named_address> out;
  for (const auto& entry : entries)
    for (const auto& a : split_address_list(entry)) {
      auto named = parse_named_address(a);
      if (!named) throw mail_error(std::string(field) + ": not a mail address: '" + a + "'");
      out.push_back(std::move(*named));
    }
  return out;
}

std::vector<std::string> split_address_list(std::string_view text) {
  std::vector<std::string> out;
  bool quoted = false;
  int angle = 0;
  std::string current;
  for (char c : text) {
    if (c == '"') quoted = !quoted;
    else if (!quoted && c == '<') ++angle;
    else if (!quoted && c == '>' && angle > 0) --angle;
    if (c == ',' && !quoted && angle == 0) {
      out.push_back(std::move(current));
      current.clear();
    } else {
      current += c;
    }
  }
  out.push_back(std::move(current));
  // "a@x, b@y," leaves an empty last item: not an address, and not an error either.
  if (out.size() > 1 && out.back().find_first_not_of(" \t") == std::string::npos) out.pop_back();
  return out;
}

}  // namespace mailnet::launcher

namespace mailnet::launcher {

mail_delivery deliver_mail(const outgoing_mail& mail, const std::string& message, const resolver_settings& resolver, const std::string& via_domain,
                           std::ostream* verbose, std::chrono::milliseconds timeout,
                           const std::optional<endpoint>& target, const submission_login* login) {
  auto named_sender = parse_named_address(mail.from);
  if (!named_sender) throw mail_error("--from: not a mail address: '" + mail.from + "'");
  auto sender = parse_mailbox(named_sender->address);
  if (!sender) throw mail_error("--from: not a mail address: '" + mail.from + "'");

  mail_delivery d;
  if (target) {
    d.target = *target;
  } else {
    d.node_domain = via_domain.empty() ? sender->domain : via_domain;
    d.target = find_domain_node(resolver.listen, d.node_domain, resolver.query_timeout, resolver.query_attempts);
  }
  // The envelope: bare addresses (build_mime has checked every one).
  std::vector<std::string> rcpts;
  for (const auto* lists : {&mail.to, &mail.cc, &mail.bcc})
    for (const auto& a : addresses_of(*lists, "")) rcpts.push_back(a.address);
  d.result = send_message(d.target.host, d.target.port, sender->domain, sender->to_string(), rcpts, message, verbose,
                          timeout, login);
  return d;
}

}  // namespace mailnet::launcher
