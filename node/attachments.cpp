#include "node/attachments.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <iterator>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

#include "common/private_files.hpp"
#include "common/mail/durable_file.hpp"

namespace mailnet::node {

namespace {

bool allowed(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == '_' || c == '+';
}

// The length of the well-formed UTF-8 sequence at s (2 to 4 bytes) for a
// character that is fine in a file name, or 0: a malformed sequence, or a C1
// control, a zero-width or direction-changing character, a line or paragraph
// separator, a byte-order mark, a private-use or unassigned-plane character.
std::size_t utf8_letter(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  const std::size_t n = c >= 0xF5 ? 0 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
  if (n == 0 || s.size() < n) return 0;
  char32_t cp = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (std::size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  const char32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < least[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;  // overlong, surrogate
  const bool unfit = cp <= 0xA0 ||                      // C1 controls, no-break space
                     cp == 0xAD || cp == 0x34F ||       // soft hyphen, combining grapheme joiner
                     cp == 0x61C || cp == 0x180E ||     // Arabic letter mark, Mongolian vowel separator
                     (cp >= 0x115F && cp <= 0x1160) || cp == 0x3164 || cp == 0xFFA0 ||  // Hangul fillers
                     (cp >= 0x17B4 && cp <= 0x17B5) ||  // Khmer invisible vowels
                     (cp >= 0x2000 && cp <= 0x200F) ||  // spaces of every width, zero-width, LRM, RLM
                     (cp >= 0x2028 && cp <= 0x202F) ||  // separators, embeddings, overrides, narrow space
                     (cp >= 0x205F && cp <= 0x206F) ||  // math space, invisible operators, isolates
                     cp == 0x3000 ||                    // ideographic space
                     (cp >= 0xFE00 && cp <= 0xFE0F) ||  // variation selectors
                     cp == 0xFEFF ||                    // byte-order mark
                     (cp >= 0xE000 && cp <= 0xF8FF) ||  // private use
                     (cp >= 0xFFF0 && cp <= 0xFFFF) ||  // specials, noncharacters
                     cp >= 0xE0000;                     // tags, variation selectors, private planes
  return unfit ? 0 : n;
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
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error(errno_text("cannot create", tmp));
  if (::fchmod(fd, 0600) != 0) {  // whatever the umask: the user's alone, like the mail
    auto text = errno_text("cannot chmod", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw std::runtime_error(text);
  }
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

// Why a message that was parsed for attachments gave none, for the log:
// never an extraction that ends in silence.
std::string nothing_to_save(const parsed_mail& mail) {
  if (mail.body_parts.empty()) return "no MIME part to read";
  std::vector<std::string> kinds;
  for (const auto& t : mail.body_parts)
    if (std::find(kinds.begin(), kinds.end(), t) == kinds.end() && kinds.size() < 8) kinds.push_back(t);
  std::string list;
  for (const auto& k : kinds) list += (list.empty() ? "" : ", ") + (k.empty() ? std::string("(no type)") : k);
  return "no part is named or marked as an attachment (" + std::to_string(mail.body_parts.size()) + " body part" +
         (mail.body_parts.size() == 1 ? "" : "s") + ": " + list + ")";
}

}  // namespace

std::string sanitize_file_name(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size();) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (allowed(c) || c == ' ') {
      out += static_cast<char>(c);
      ++i;
    } else if (std::size_t n = c >= 0x80 ? utf8_letter(name.substr(i)) : 0; n > 0) {
      out.append(name.substr(i, n));
      i += n;
    } else {
      if (out.empty() || out.back() != '_') out += '_';
      ++i;
    }
  }
  // No hidden files, nothing that reads as "." or "..", nothing a shell
  // takes for an option, no space at either end (also after a cut).
  auto first = out.find_first_not_of("._- ");
  out = first == std::string::npos ? std::string() : out.substr(first);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > max_file_name) {
    auto [stem, ext] = split_extension(out);
    std::size_t keep = max_file_name - std::min(ext.size(), max_file_name);
    // Back to the start of a character: never half of a UTF-8 sequence.
    while (keep > 0 && keep < stem.size() && (static_cast<unsigned char>(stem[keep]) & 0xC0) == 0x80) --keep;
    out = stem.substr(0, keep);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += ext;
  }
  return out.empty() ? "attachment" : out;
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
  if (mail.attachments.empty()) {
    if (result.error.empty()) result.reason = nothing_to_save(mail);
    return result;
  }

  const auto dir = attachments_root / message_name;
  try {
    // 0700 folders, made or checked one by one without following a link.
    make_private_folders(attachments_root.parent_path(), attachments_root.filename() / message_name);
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
