#include "common/mail/mime_comments.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

namespace mailnet::node {

namespace {

constexpr std::size_t max_nesting = 64;  // deeper structure is left to the parser, which refuses it

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// The line at pos, with its line end ("\r\n", "\n" or none at the end).
std::string_view line_at(std::string_view text, std::size_t pos) {
  const auto nl = text.find('\n', pos);
  return text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl + 1 - pos);
}

bool is_blank_line(std::string_view line) { return line == "\n" || line == "\r\n"; }

// What the structure walk needs from a Content-Type: its type, subtype and boundary.
struct content_type {
  std::string type, subtype, boundary;
};

// Parameters split at ';' outside quoted strings; a quoted value unquoted.
content_type parse_content_type(std::string_view stripped) {
  std::vector<std::string_view> pieces;
  bool quoted = false;
  std::size_t start = 0;
  for (std::size_t i = 0; i < stripped.size(); ++i) {
    if (quoted && stripped[i] == '\\') ++i;
    else if (stripped[i] == '"') quoted = !quoted;
    else if (stripped[i] == ';' && !quoted) {
      pieces.push_back(stripped.substr(start, i - start));
      start = i + 1;
    }
  }
  pieces.push_back(stripped.substr(std::min(start, stripped.size())));
  content_type ct;
  const auto type = trim(pieces[0]);
  const auto slash = type.find('/');
  ct.type = lower(trim(type.substr(0, slash)));
  if (slash != std::string_view::npos) ct.subtype = lower(trim(type.substr(slash + 1)));
  for (std::size_t i = 1; i < pieces.size(); ++i) {
    const auto eq = pieces[i].find('=');
    if (eq == std::string_view::npos || lower(trim(pieces[i].substr(0, eq))) != "boundary") continue;
    auto value = trim(pieces[i].substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      for (std::size_t k = 1; k + 1 < value.size(); ++k) {
        if (value[k] == '\\' && k + 2 < value.size()) ++k;
        ct.boundary += value[k];
      }
    } else {
      ct.boundary = std::string(value);
    }
  }
  return ct;
}

// Replaces length bytes at `at` (a field's value) with text.
struct edit {
  std::size_t at, length;
  std::string text;
};

class structure_walk {
 public:
  explicit structure_walk(std::string_view text) : text_(text) {}

  struct header_info {
    content_type type;
    bool has_disposition = false;
  };

  // The message's own header block only.
  header_info top_header() {
    std::size_t pos = 0;
    return header_block(pos);
  }

  std::vector<edit> run() {
    std::size_t pos = 0;
    bool in_header = true;
    while (pos < text_.size()) {
      if (in_header) {
        const content_type ct = header_block(pos).type;
        in_header = ct.type == "message" && (ct.subtype == "rfc822" || ct.subtype == "global");
        if (ct.type == "multipart" && !ct.boundary.empty() && boundaries_.size() < max_nesting)
          boundaries_.push_back(ct.boundary);
        continue;
      }
      const auto line = line_at(text_, pos);
      pos += line.size();
      in_header = at_boundary(line);
    }
    return std::move(edits_);
  }

 private:
  // Reads the header block at pos (up to and past its blank line).
  header_info header_block(std::size_t& pos) {
    header_info info;
    while (pos < text_.size()) {
      const auto first = line_at(text_, pos);
      if (is_blank_line(first)) {
        pos += first.size();
        break;
      }
      std::size_t end = pos + first.size();  // the field and its folded lines
      while (end < text_.size() && (text_[end] == ' ' || text_[end] == '\t')) end += line_at(text_, end).size();
      const auto field = text_.substr(pos, end - pos);
      const auto colon = field.find(':');
      if (colon != std::string_view::npos) {
        const auto name = lower(trim(field.substr(0, colon)));
        if (name == "content-type" || name == "content-disposition") {
          // The field's own line end stays out of the stripping: a comment
          // never closed must not swallow it and join the next line.
          auto value = field.substr(colon + 1);
          std::size_t text_end = value.size();
          while (text_end > 0 && (value[text_end - 1] == '\r' || value[text_end - 1] == '\n')) --text_end;
          std::string stripped = strip_comments(value.substr(0, text_end));
          stripped += value.substr(text_end);
          if (name == "content-type") info.type = parse_content_type(stripped);
          else info.has_disposition = true;
          if (stripped != value) edits_.push_back({pos + colon + 1, value.size(), std::move(stripped)});
        }
      }
      pos = end;
    }
    return info;
  }

  // A delimiter line of an open multipart (RFC 2046 §5.1.1): true when a
  // part's header block follows. A closing delimiter ends its multipart and
  // any left open inside it.
  bool at_boundary(std::string_view line) {
    if (line.size() < 3 || line[0] != '-' || line[1] != '-') return false;
    for (std::size_t i = boundaries_.size(); i-- > 0;) {
      const auto& b = boundaries_[i];
      if (line.compare(2, b.size(), b) != 0) continue;
      auto rest = line.substr(2 + b.size());
      const bool closing = rest.substr(0, 2) == "--";
      if (closing) rest.remove_prefix(2);
      if (!trim(rest).empty()) continue;
      boundaries_.resize(closing ? i : i + 1);
      return !closing;
    }
    return false;
  }

  std::string_view text_;
  std::vector<std::string> boundaries_;
  std::vector<edit> edits_;
};

}  // namespace

std::string strip_comments(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  int depth = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (depth > 0) {
      if (c == '\\') ++i;  // a quoted pair: the next character is text
      else if (c == '(') ++depth;
      else if (c == ')' && --depth == 0) out += ' ';
      continue;
    }
    if (quoted) {
      out += c;
      if (c == '\\' && i + 1 < value.size()) out += value[++i];
      else if (c == '"') quoted = false;
    } else if (c == '"') {
      quoted = true;
      out += c;
    } else if (c == '(') {
      depth = 1;
    } else {
      out += c;
    }
  }
  if (depth > 0) out += ' ';  // a comment never closed runs to the end of the field
  return out;
}

std::optional<std::string> without_mime_comments(std::string_view message) {
  if (message.find('(') == std::string_view::npos) return std::nullopt;
  const auto edits = structure_walk(message).run();
  if (edits.empty()) return std::nullopt;
  std::string out;
  out.reserve(message.size());
  std::size_t done = 0;
  for (const auto& e : edits) {
    out.append(message.substr(done, e.at - done));
    out += e.text;
    done = e.at + e.length;
  }
  out.append(message.substr(done));
  return out;
}

bool may_carry_attachments(std::string_view message) {
  const auto top = structure_walk(message).top_header();
  if (top.has_disposition || top.type.type == "multipart" || top.type.type == "message") return true;
  // A file name in a Content-Type of another kind ("application/pdf; name=...").
  std::size_t end = 0;
  while (end < message.size() && !is_blank_line(line_at(message, end))) end += line_at(message, end).size();
  return lower(message.substr(0, end)).find("name=") != std::string::npos;
}

}  // namespace mailnet::node
