#include "launcher/web/messages.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "common/mail/durable_file.hpp"
#include "common/mail/maildir_read.hpp"
#include "common/mail/mime_parse.hpp"
#include "common/topology.hpp"

namespace mailnet::launcher::web {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

response json_reply(int status, const json& body) {
  response r;
  r.status = status;
  r.body = body.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  return r;
}

std::string lowered(std::string s) { return node::ascii_lower(std::move(s)); }

std::string without_root_dot(std::string domain) {
  domain = lowered(std::move(domain));
  if (domain.size() > 1 && domain.back() == '.') domain.pop_back();
  return domain;
}

// The delivery time at the start of a name "1795318974.M004475P812Q3".
void name_time(const std::string& name, long long& seconds, long long& micros) {
  seconds = micros = 0;
  std::sscanf(name.c_str(), "%lld.M%lld", &seconds, &micros);
}

// One line of a listing: a file's summary, its entry and the Maildir it is in.
template <typename Entry>
struct listed {
  const message_summary* s;
  Entry* entry;
  const std::string* domain;
  const std::string* user;
  bool junk;
};

// The names a person sees for a user's two folders (IMAP's, as Dovecot shows them).
const char* folder_name(bool junk) { return junk ? "Junk" : "INBOX"; }

template <typename Entry>
bool newer(const listed<Entry>& a, const listed<Entry>& b) {
  if (a.s->seconds != b.s->seconds) return a.s->seconds > b.s->seconds;
  if (a.s->micros != b.s->micros) return a.s->micros > b.s->micros;
  if (a.s->id != b.s->id) return a.s->id > b.s->id;
  if (*a.domain != *b.domain) return *a.domain < *b.domain;
  return *a.user < *b.user;
}

json summary_json(const message_summary& s, const std::string& domain, const std::string& user, bool unread,
                  bool junk) {
  return {{"id", s.id},           {"domain", domain},     {"user", user},
          {"folder", folder_name(junk)},
          {"from", s.from},       {"to", s.to},           {"subject", s.subject},
          {"date", s.date},       {"message_id", s.message_id}, {"size", s.size},
          {"attachments", s.attachments}, {"unread", unread}, {"bounce", s.bounce}};
}

// The summary's object as json_reply writes it as an element of the list
// (indented two levels deeper than on its own): made once per file.
std::string listed_object(const message_summary& s, const std::string& domain, const std::string& user,
                          bool unread, bool junk) {
  const std::string alone =
      summary_json(s, domain, user, unread, junk).dump(2, ' ', false, json::error_handler_t::replace);
  std::string out = "    ";
  out.reserve(alone.size() + alone.size() / 8);
  for (const char c : alone) {
    out += c;
    if (c == '\n') out += "    ";  // a string's own line breaks are escaped: every '\n' is between lines
  }
  return out;
}

long long nanoseconds(const struct ::timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

// The header fields as written (unfolded, not decoded), in order.
json header_fields(const std::string& raw) {
  json out = json::array();
  std::size_t pos = 0;
  std::string name, value;
  auto flush = [&] {
    if (!name.empty()) out.push_back(json::array({name, value}));
    name.clear();
    value.clear();
  };
  for (std::size_t count = 0; pos < raw.size() && count < 10000; ++count) {
    std::size_t end = raw.find('\n', pos);
    if (end == std::string::npos) end = raw.size();
    std::string line = raw.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) break;  // the end of the header block
    if ((line[0] == ' ' || line[0] == '\t') && !name.empty()) {
      value += " " + line.substr(line.find_first_not_of(" \t"));
      continue;
    }
    flush();
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0) continue;  // not a field
    name = line.substr(0, colon);
    const auto start = line.find_first_not_of(" \t", colon + 1);
    value = start == std::string::npos ? "" : line.substr(start);
  }
  flush();
  return out;
}

response no_message(const std::string& id) {
  return error_response(404, "no message with id '" + id + "' in any Maildir of this network");
}

bool is_token_char(unsigned char c) {
  return std::isalnum(c) || std::string_view("!#$&-^_.+").find(static_cast<char>(c)) != std::string_view::npos;
}

}  // namespace

bool is_unread(const fs::path& file) {
  if (file.parent_path().filename() == "new") return true;
  const std::string name = file.filename().string();
  const auto info = name.find(":2,");
  return info == std::string::npos || name.find('S', info + 3) == std::string::npos;
}

bool is_bounce(const std::string& from, const json& header_fields) {
  if (lowered(from).find("mailer-daemon") != std::string::npos) return true;
  for (const auto& field : header_fields)
    if (lowered(field[0].get<std::string>()) == "content-type")
      return lowered(field[1].get<std::string>()).starts_with("multipart/report");
  return false;
}

std::string message_id_of(const std::string& file_name) { return file_name.substr(0, file_name.find(':')); }

std::string safe_file_name(const std::string& name, std::size_t n) {
  std::string out;
  for (unsigned char c : name) {
    if (out.size() >= 100) break;
    out += std::isalnum(c) || c == '.' || c == '-' || c == '_' ? static_cast<char>(c) : '_';
  }
  while (!out.empty() && out.front() == '.') out.erase(out.begin());
  if (out.find_first_not_of("._") == std::string::npos) out = "attachment-" + std::to_string(n);
  return out;
}

std::string safe_content_type(const std::string& type) {
  const auto slash = type.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == type.size() || type.size() > 127)
    return "application/octet-stream";
  for (std::size_t i = 0; i < type.size(); ++i)
    if (i != slash && !is_token_char(static_cast<unsigned char>(type[i]))) return "application/octet-stream";
  return lowered(type);
}

// What q searches of a message's text, kept for every indexed message: the
// first 64 KiB (10,000 messages of long text stay well under a gigabyte).
constexpr std::size_t max_searched_text = 64 * 1024;

std::shared_ptr<const message_summary> message_store::read_summary(const fs::path& file, std::uint64_t inode) {
  // A Maildir name is never used twice and its file never rewritten: what
  // was read of it holds as long as the name is listed with that inode.
  const std::string id = message_id_of(file.filename().string());
  const std::string key = id + "/" + std::to_string(inode);
  if (const auto it = read_.find(key); it != read_.end())
    if (auto known = it->second.lock()) return known;  // another link of the same file
  std::string raw;
  try {
    raw = node::read_whole_file(file, false);  // never through a link
  } catch (const std::exception&) {
    return nullptr;  // removed meanwhile
  }
  const auto m = node::parse_mail(raw);
  auto s = std::make_shared<message_summary>();
  s->id = id;
  s->from = m.from;
  s->to = m.to;
  s->subject = m.subject;
  s->date = m.date;
  s->message_id = m.message_id;
  s->size = raw.size();
  for (const auto& a : m.attachments) s->attachments.push_back(a.file_name);
  s->bounce = is_bounce(m.from, header_fields(raw));
  s->haystack = lowered(m.subject + "\n" + m.from + "\n" + m.to + "\n" + m.text.substr(0, max_searched_text));
  name_time(s->id, s->seconds, s->micros);
  read_[key] = s;
  return s;
}

void message_store::refresh_folder(folder_index& f, const fs::path& folder) {
  struct ::stat st {};
  if (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    f = folder_index{};
    return;
  }
  if (f.settled && f.inode == st.st_ino && f.mtime_ns == nanoseconds(st.st_mtim)) return;  // nothing changed
  struct ::timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  DIR* d = ::opendir(folder.c_str());
  if (!d) {
    f = folder_index{};
    return;
  }
  std::unordered_map<std::string, file_entry> files;
  files.reserve(f.files.size() + 64);
  // Bounded: a folder of more entries than this is not read to its end.
  for (std::size_t count = 0; count < (std::size_t{1} << 24); ++count) {
    const ::dirent* e = ::readdir(d);
    if (!e) break;
    const std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    bool regular = e->d_type == DT_REG;  // a planted link is not mail
    if (e->d_type == DT_UNKNOWN) {
      struct ::stat fst {};
      regular = ::fstatat(::dirfd(d), e->d_name, &fst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(fst.st_mode);
    }
    if (!regular) continue;
    std::string key(name);
    if (auto old = f.files.find(key); old != f.files.end() && old->second.inode == e->d_ino) {
      files.emplace(std::move(key), std::move(old->second));
      continue;
    }
    if (auto s = read_summary(folder / key, e->d_ino)) files.emplace(std::move(key), file_entry{e->d_ino, std::move(s), is_unread(folder / key), {}});
  }
  ::closedir(d);
  f.files = std::move(files);
  f.inode = st.st_ino;
  f.mtime_ns = nanoseconds(st.st_mtim);
  // Read more than a second after its last change: a later change moves the mtime.
  f.settled = nanoseconds(now) - f.mtime_ns > 1000000000LL;
}

message_store::mailbox_index& message_store::refresh_mailbox(const fs::path& maildir, const std::string& domain,
                                                             const std::string& user) {
  auto& m = mailboxes_[maildir.string()];
  m.domain = domain;
  m.user = user;
  m.seen = true;
  refresh_folder(m.sub[0], maildir / "new");
  refresh_folder(m.sub[1], maildir / "cur");
  refresh_folder(m.sub[2], maildir / node::junk_maildir / "new");  // mostly absent: one stat()
  refresh_folder(m.sub[3], maildir / node::junk_maildir / "cur");
  return m;
}

void message_store::refresh() {
  for (auto& [path, m] : mailboxes_) m.seen = false;
  for (const auto& d : node::mail_domains(dir_))
    for (const auto& u : node::user_folders(d / "mail")) refresh_mailbox(u, d.filename().string(), u.filename().string());
  // What is not there any more is forgotten.
  std::erase_if(mailboxes_, [](const auto& e) { return !e.second.seen; });
  std::erase_if(read_, [](const auto& e) { return e.second.expired(); });
}

std::size_t message_store::indexed() const {
  std::size_t n = 0;
  for (const auto& [path, m] : mailboxes_)
    for (const auto& f : m.sub) n += f.files.size();
  return n;
}

response message_store::list(const message_query& q) {
  std::vector<mailbox_index*> boxes;
  if (q.domain.empty() && q.user.empty()) {
    refresh();
    for (auto& [path, m] : mailboxes_) boxes.push_back(&m);
  } else {
    std::vector<fs::path> domains;
    if (q.domain.empty()) {
      domains = node::mail_domains(dir_);
    } else {
      const auto found = node::entry_in_any_case(dir_, without_root_dot(q.domain));
      if (found.empty()) return error_response(404, "no domain '" + q.domain + "' in this network");
      domains.push_back(found);
    }
    for (const auto& d : domains) {
      std::vector<fs::path> users;
      if (q.user.empty()) users = node::user_folders(d / "mail");
      else if (auto u = node::entry_in_any_case(d / "mail", q.user); !u.empty()) users.push_back(u);
      for (const auto& u : users) boxes.push_back(&refresh_mailbox(u, d.filename().string(), u.filename().string()));
    }
  }
  // Pointers into the index, never copies of it.
  const std::string needle = lowered(q.q);
  std::vector<listed<file_entry>> matched;
  for (auto* m : boxes)
    for (std::size_t i = 0; i < std::size(m->sub); ++i) {
      const bool junk = junk_sub(i);
      if (!q.folder.empty() && q.folder != folder_name(junk)) continue;
      for (auto& [name, e] : m->sub[i].files)
        if (needle.empty() || e.summary->haystack.find(needle) != std::string::npos)
          matched.push_back({e.summary.get(), &e, &m->domain, &m->user, junk});
    }
  const std::size_t count = std::min(q.limit, matched.size());
  std::partial_sort(matched.begin(), matched.begin() + static_cast<std::ptrdiff_t>(count), matched.end(),
                    newer<file_entry>);
  // Written as json_reply would write {"count", "messages", "total"} (keys in
  // order, two spaces an indent), each message's object made once and kept.
  response r;
  r.body = "{\n  \"count\": " + std::to_string(count) + ",\n  \"messages\": ";
  if (count == 0) r.body += "[]";
  for (std::size_t i = 0; i < count; ++i) {
    auto& e = *matched[i].entry;
    if (e.json.empty())
      e.json = listed_object(*matched[i].s, *matched[i].domain, *matched[i].user, e.unread, matched[i].junk);
    r.body += i == 0 ? "[\n" : ",\n";
    r.body += e.json;
  }
  if (count > 0) r.body += "\n  ]";
  r.body += ",\n  \"total\": " + std::to_string(matched.size()) + "\n}\n";
  r.status = 200;
  return r;
}

std::vector<fs::path> message_store::locate(const std::string& id) const {
  std::vector<fs::path> found;
  if (id.empty() || id.find('/') != std::string::npos) return found;
  for (const auto& d : node::mail_domains(dir_))
    for (const auto& u : node::user_folders(d / "mail"))
      for (const auto& maildir : {u, u / node::junk_maildir})
        for (const auto& file : node::maildir_files(maildir))
          if (message_id_of(file.filename().string()) == id) found.push_back(file);
  return found;
}

std::optional<std::string> message_store::load(const std::vector<fs::path>& files) {
  if (files.empty()) return std::nullopt;
  try {
    return node::read_whole_file(files.front(), false);
  } catch (const std::exception&) {
    return std::nullopt;  // removed meanwhile, or a link planted in its place
  }
}

response message_store::detail(const std::string& id) {
  const auto files = locate(id);
  const auto loaded = load(files);
  if (!loaded) return no_message(id);
  const std::string& raw = *loaded;
  const auto m = node::parse_mail(raw);
  json users = json::array();
  for (const auto& f : files) {
    const auto user = node::user_maildir_of(f);
    users.push_back({{"domain", user.parent_path().parent_path().filename().string()},
                     {"user", user.filename().string()},
                     {"folder", folder_name(node::in_junk(f))},
                     {"unread", is_unread(f)}});
  }
  json attachments = json::array();
  for (std::size_t i = 0; i < m.attachments.size(); ++i)
    attachments.push_back({{"index", i},
                           {"name", m.attachments[i].file_name},
                           {"type", m.attachments[i].content_type},
                           {"size", m.attachments[i].data.size()}});
  const json headers = header_fields(raw);
  json doc = {{"id", id},
              {"mailboxes", users},
              {"bounce", is_bounce(m.from, headers)},
              {"size", raw.size()},
              {"from", m.from},
              {"to", m.to},
              {"cc", m.cc},
              {"subject", m.subject},
              {"date", m.date},
              {"message_id", m.message_id},
              {"headers", headers},
              {"text", m.text},
              {"html", m.html},
              {"attachments", attachments},
              {"mime_errors", m.errors}};
  return json_reply(200, doc);
}

response message_store::raw(const std::string& id) {
  auto loaded = load(locate(id));
  if (!loaded) return no_message(id);
  response r;
  r.body = std::move(*loaded);
  r.content_type = "message/rfc822";
  // Shown by a browser as text at most; never a page of ours that runs anything.
  r.headers.emplace_back("Content-Security-Policy", "sandbox");
  return r;
}

response message_store::html(const std::string& id) {
  const auto loaded = load(locate(id));
  if (!loaded) return no_message(id);
  auto m = node::parse_mail(*loaded);
  if (m.html.empty()) return error_response(404, "message '" + id + "' has no HTML part");
  response r;
  r.content_type = "text/html; charset=utf-8";
  r.body = std::move(m.html);
  r.headers.emplace_back("Content-Security-Policy", mail_html_policy);
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  return r;
}

response message_store::mailboxes() {
  // The topology's domains and users in its order, then any other Maildir
  // (a user the topology does not list, with require_known_users off).
  std::vector<std::pair<std::string, std::vector<std::string>>> wanted;
  std::string topology_error;
  try {
    const auto t = parse_topology(read_topology_file(dir_ / "topology.json"), (dir_ / "topology.json").string());
    for (const auto& d : t.domains) wanted.emplace_back(d.name, d.users);
  } catch (const std::exception& e) {
    topology_error = e.what();  // the Maildirs alone, then
  }
  const auto domain_folders = node::mail_domains(dir_);
  for (const auto& d : domain_folders) {
    const std::string name = d.filename().string();
    if (std::none_of(wanted.begin(), wanted.end(), [&](const auto& w) { return w.first == name; }))
      wanted.emplace_back(name, std::vector<std::string>{});
  }
  json domains = json::array();
  for (auto& [domain, users] : wanted) {
    const fs::path mail = dir_ / domain / "mail";
    std::vector<std::pair<std::string, fs::path>> boxes;
    for (const auto& u : users) boxes.emplace_back(u, node::entry_in_any_case(mail, u));
    for (const auto& folder : node::user_folders(mail))
      if (std::none_of(boxes.begin(), boxes.end(), [&](const auto& b) { return b.second == folder; }))
        boxes.emplace_back(folder.filename().string(), folder);
    json list = json::array();
    std::size_t total = 0, unread = 0;
    for (const auto& [user, folder] : boxes) {
      std::size_t n = 0, u = 0;
      // Counted, not listed: no order needed, so no sort of every name. The
      // Junk folder's count in the totals too, as the user's list shows it.
      for (const auto& sub : {fs::path("new"), fs::path("cur"), fs::path(node::junk_maildir) / "new",
                              fs::path(node::junk_maildir) / "cur"}) {
        if (folder.empty()) break;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(folder / sub, ec))
          if (e.is_regular_file() && !e.is_symlink()) {  // as maildir_files: a planted link is not mail
            ++n;
            if (is_unread(e.path())) ++u;
          }
      }
      total += n;
      unread += u;
      list.push_back({{"user", user}, {"total", n}, {"unread", u}});
    }
    domains.push_back({{"domain", domain}, {"total", total}, {"unread", unread}, {"users", list}});
  }
  json doc = {{"domains", domains}};
  if (!topology_error.empty()) doc["topology_error"] = topology_error;
  return json_reply(200, doc);
}

response message_store::attachment(const std::string& id, const std::string& n) {
  const auto loaded = load(locate(id));
  if (!loaded) return no_message(id);
  auto m = node::parse_mail(*loaded);
  std::size_t index = 0;
  const bool number = !n.empty() && n.size() < 6 && n.find_first_not_of("0123456789") == std::string::npos;
  if (number) index = std::stoul(n);
  if (!number || index >= m.attachments.size())
    return error_response(404, "message '" + id + "' has no attachment " + n + " (it has " +
                                   std::to_string(m.attachments.size()) + ", numbered from 0)");
  auto& a = m.attachments[index];
  response r;
  r.content_type = safe_content_type(a.content_type);
  r.body = std::move(a.data);
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + safe_file_name(a.file_name, index) + "\"");
  r.headers.emplace_back("Content-Security-Policy", "sandbox");
  return r;
}

response message_store::remove(const std::string& id, const std::string& domain, const std::string& user) {
  const auto files = locate(id);
  if (files.empty()) return no_message(id);
  json removed = json::array();
  for (const auto& f : files) {
    const auto u = node::user_maildir_of(f);
    const std::string d = u.parent_path().parent_path().filename().string();
    if (!domain.empty() && lowered(d) != without_root_dot(domain)) continue;
    if (!user.empty() && lowered(u.filename().string()) != lowered(user)) continue;
    std::error_code ec;
    if (fs::remove(f, ec))
      removed.push_back({{"domain", d}, {"user", u.filename().string()}});
    if (const auto m = mailboxes_.find(u.string()); m != mailboxes_.end())
      m->second.sub[(node::in_junk(f) ? 2 : 0) + (f.parent_path().filename() == "new" ? 0 : 1)].files.erase(
          f.filename().string());
  }
  if (removed.empty())
    return error_response(404, "message '" + id + "' is not in the Maildir of " +
                                   (user.empty() ? "any user" : "user '" + user + "'") +
                                   (domain.empty() ? "" : " of '" + domain + "'"));
  return json_reply(200, {{"ok", true}, {"id", id}, {"removed", removed}});
}

}  // namespace mailnet::launcher::web
