#include "common/mail/maildir_read.hpp"

#include <algorithm>
#include <cctype>

namespace mailnet::node {

namespace fs = std::filesystem;

std::string ascii_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<fs::path> maildir_files(const fs::path& maildir) {
  std::vector<fs::path> files;
  for (const char* sub : {"new", "cur"}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(maildir / sub, ec))
      if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path());  // a planted link is not mail
  }
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return files;
}

bool in_junk(const fs::path& file) { return file.parent_path().parent_path().filename() == fs::path(junk_maildir); }

fs::path user_maildir_of(const fs::path& file) {
  const auto maildir = file.parent_path().parent_path();
  return in_junk(file) ? maildir.parent_path() : maildir;
}

std::vector<fs::path> user_folders(const fs::path& mail_root) {
  std::vector<fs::path> users;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(mail_root, ec))
    if (e.is_directory() && !e.is_symlink()) users.push_back(e.path());
  std::sort(users.begin(), users.end());
  return users;
}

fs::path entry_in_any_case(const fs::path& folder, const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) return {};
  if (fs::is_directory(folder / name) && !fs::is_symlink(folder / name)) return folder / name;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder, ec))
    if (e.is_directory() && !e.is_symlink() && ascii_lower(e.path().filename().string()) == ascii_lower(name))
      return e.path();
  return {};
}

std::vector<fs::path> mail_domains(const fs::path& run_dir) {
  std::vector<fs::path> domains;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    std::error_code ec2;
    if (e.is_directory() && !e.is_symlink() && fs::is_directory(e.path() / "mail", ec2) &&
        !fs::is_symlink(e.path() / "mail", ec2))
      domains.push_back(e.path());
  }
  std::sort(domains.begin(), domains.end());
  return domains;
}

}  // namespace mailnet::node
