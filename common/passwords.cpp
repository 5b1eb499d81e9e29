#include "common/passwords.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <sys/random.h>
#include <system_error>

#include "common/private_files.hpp"

namespace mailnet {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view scheme = "{PLAIN}";
constexpr std::size_t max_file_size = 16 << 20;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

fs::path passwords_file(const fs::path& run_dir) { return run_dir / "passwords"; }

std::string generate_password() {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string out;
  for (int round = 0; round < 100 && out.size() < 20; ++round) {  // bounded: rejection leaves ~3% out per byte
    unsigned char buf[32];
    ssize_t n = ::getrandom(buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "getrandom");
    for (ssize_t i = 0; i < n && out.size() < 20; ++i)
      if (buf[i] < 248) out += alphabet[buf[i] % 62];  // 248 = 4 * 62: no bias
  }
  if (out.size() < 20) throw std::runtime_error("getrandom gave too few bytes for a password");
  return out;
}

std::vector<password_entry> read_passwords(const fs::path& file) {
  const std::string text = read_private_file(file, max_file_size);
  std::vector<password_entry> out;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    auto fail = [&](const std::string& why) {
      throw std::runtime_error(file.string() + ": line " + std::to_string(line_no) + ": " + why);
    };
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) fail("expected user@domain:{PLAIN}password");
    const auto address = line.substr(0, colon);
    const auto at = address.rfind('@');
    if (at == std::string_view::npos || at == 0 || at + 1 == address.size()) fail("expected user@domain before ':'");
    auto rest = line.substr(colon + 1);
    if (rest.substr(0, scheme.size()) != scheme) fail("expected the scheme {PLAIN} after ':'");
    rest.remove_prefix(scheme.size());
    rest = rest.substr(0, rest.find(':'));  // passwd-file fields after the password, if any
    if (!is_valid_password(rest)) fail("the password is empty, too long or has characters other than printable ASCII");
    out.push_back({std::string(address.substr(0, at)), lower(address.substr(at + 1)), std::string(rest)});
  }
  return out;
}

std::vector<password_entry> prepare_passwords(const fs::path& run_dir, const topology& net) {
  const fs::path file = passwords_file(run_dir);
  std::map<std::string, std::string> kept;  // lower-case address -> password
  std::error_code ec;
  if (fs::symlink_status(file, ec).type() != fs::file_type::not_found) {
    for (const auto& e : read_passwords(file)) kept[lower(e.address())] = e.password;
  }
  std::vector<password_entry> out;
  std::string text =
      "# mailnet: the users' passwords (Dovecot passwd-file form). Written by `mailnet up`:\n"
      "# the topology's passwords, and generated ones kept until `up --fresh`.\n";
  for (const auto& d : net.domains) {
    for (const auto& u : d.users) {
      password_entry e{u, d.name, ""};
      if (auto it = d.passwords.find(u); it != d.passwords.end()) e.password = it->second;
      else if (auto k = kept.find(lower(e.address())); k != kept.end()) e.password = k->second;
      else e.password = generate_password();
      text += e.address() + ":" + std::string(scheme) + e.password + "\n";
      out.push_back(std::move(e));
    }
  }
  // Written beside, then renamed: a crash never leaves half a file.
  const fs::path tmp = run_dir / "passwords.tmp";
  write_private_file(tmp, text);
  fs::rename(tmp, file);
  return out;
}

const password_entry* find_password(const std::vector<password_entry>& entries, std::string_view login,
                                    std::string_view domain) {
  std::string user(login);
  std::string dom = lower(domain);
  if (auto at = login.rfind('@'); at != std::string_view::npos) {
    user = std::string(login.substr(0, at));
    dom = lower(login.substr(at + 1));
  }
  const auto wanted = lower(user);
  for (const auto& e : entries)
    if (e.domain == dom && lower(e.user) == wanted) return &e;
  return nullptr;
}

bool check_password(const std::vector<password_entry>& entries, std::string_view login, std::string_view domain,
                    std::string_view password) {
  const password_entry* e = find_password(entries, login, domain);
  // Compared over the longer length, byte by byte, whatever matches.
  const std::string_view stored = e ? std::string_view(e->password) : std::string_view();
  const std::size_t n = std::max(stored.size(), password.size());
  unsigned char diff = stored.size() == password.size() ? 0 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char a = i < stored.size() ? static_cast<unsigned char>(stored[i]) : 0;
    const unsigned char b = i < password.size() ? static_cast<unsigned char>(password[i]) : 0;
    diff = static_cast<unsigned char>(diff | (a ^ b));
  }
  return e != nullptr && diff == 0;
}

}  // namespace mailnet
