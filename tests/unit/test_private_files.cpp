#include <doctest/doctest.h>

#include <condition_variable>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "common/private_files.hpp"
#include "common/mail/durable_file.hpp"
#include "node/maildir.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using mailnet::test::temp_dir;

namespace {

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// Runs body with the process umask set to mask, then puts the old one back.
template <typename Body>
void with_umask(mode_t mask, Body body) {
  const mode_t old = ::umask(mask);
  try {
    body();
  } catch (...) {
    ::umask(old);
    throw;
  }
  ::umask(old);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

TEST_CASE("private folders are 0700 and files 0600 whatever the umask") {
  for (mode_t mask : {mode_t{0}, mode_t{022}, mode_t{0277}}) {
    CAPTURE(mask);
    temp_dir dir("private");
    with_umask(mask, [&] {
      mailnet::make_private_folder(dir.path / "run" / "x");
      mailnet::make_private_folders(dir.path / "run" / "x", "a/b");
      mailnet::write_private_file(dir.path / "run" / "x" / "a" / "f", "data");
    });
    CHECK(mode_of(dir.path / "run") == 0700);
    CHECK(mode_of(dir.path / "run" / "x") == 0700);
    CHECK(mode_of(dir.path / "run" / "x" / "a") == 0700);
    CHECK(mode_of(dir.path / "run" / "x" / "a" / "b") == 0700);
    CHECK(mode_of(dir.path / "run" / "x" / "a" / "f") == 0600);
    CHECK(slurp(dir.path / "run" / "x" / "a" / "f") == "data");
  }
}

TEST_CASE("a link is refused, not followed, wherever it stands") {
  temp_dir dir("private_links");
  const auto victim = dir.write("victim", "precious");
  fs::create_directories(dir.path / "run" / "a");
  fs::create_directory(dir.path / "elsewhere");
  fs::create_symlink(victim, dir.path / "run" / "file");
  fs::create_directory_symlink(dir.path / "elsewhere", dir.path / "run" / "a" / "b");
  CHECK_THROWS_AS(mailnet::write_private_file(dir.path / "run" / "file", "x"), mailnet::unsafe_path_error);
  CHECK_THROWS_AS(mailnet::make_private_folders(dir.path / "run", "a/b/c"), mailnet::unsafe_path_error);
  CHECK_THROWS_AS(mailnet::make_private_folder(dir.path / "run" / "a" / "b"), mailnet::unsafe_path_error);
  CHECK_THROWS_WITH_AS(mailnet::check_private_tree(dir.path / "run"), doctest::Contains("is a symbolic link"),
                       mailnet::unsafe_path_error);
  CHECK(slurp(victim) == "precious");
  CHECK(fs::is_empty(dir.path / "elsewhere"));

  // Emptying removes the links themselves, never what they point to.
  std::ofstream(dir.path / "elsewhere" / "keep") << "kept";
  mailnet::empty_folder(dir.path / "run");
  CHECK(fs::is_empty(dir.path / "run"));
  CHECK(slurp(victim) == "precious");
  CHECK(slurp(dir.path / "elsewhere" / "keep") == "kept");
}

TEST_CASE("a folder others can write to is refused; one of ours that others can read is tightened") {
  temp_dir dir("private_modes");
  fs::create_directory(dir.path / "open");
  fs::permissions(dir.path / "open", fs::perms::all);
  CHECK_THROWS_WITH_AS(mailnet::make_private_folder(dir.path / "open"), doctest::Contains("writable by group or others"),
                       mailnet::unsafe_path_error);
  fs::create_directory(dir.path / "readable");
  fs::permissions(dir.path / "readable", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_exec);
  mailnet::check_private_tree(dir.path / "readable");
  CHECK(mode_of(dir.path / "readable") == 0700);
}

TEST_CASE("one message for several Maildirs is one file with a link in each") {
  temp_dir dir("stage_shared");
  mailnet::make_private_folders(dir.path, "mail");
  mailnet::node::maildir_store store(dir.path / "mail");
  const std::vector<std::string> boxes{"a", "b", "c"};
  auto staged = store.stage_shared(boxes, "Subject: x\r\n\r\nbody\r\n");
  REQUIRE(staged.size() == 3);
  mailnet::node::publish(staged);
  struct stat first {};
  REQUIRE(::stat(staged[0].final_path.c_str(), &first) == 0);
  CHECK(first.st_nlink == 3);
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    CAPTURE(i);
    struct stat st {};
    REQUIRE(::stat(staged[i].final_path.c_str(), &st) == 0);
    CHECK(st.st_ino == first.st_ino);
    CHECK(staged[i].final_path == dir.path / "mail" / boxes[i] / "new" / staged[0].final_path.filename());
    CHECK(fs::is_empty(dir.path / "mail" / boxes[i] / "tmp"));
    CHECK(slurp(staged[i].final_path) == "Subject: x\r\n\r\nbody\r\n");
  }
  CHECK(mode_of(staged[0].final_path) == 0600);
}

TEST_CASE("a Junk folder is a Maildir++ subfolder: tmp, new, cur and an empty maildirfolder, 0600 under any umask") {
  temp_dir dir("junk_folder");
  mailnet::make_private_folders(dir.path, "mail");
  mailnet::node::maildir_store store(dir.path / "mail");
  with_umask(0, [&] {
    store.ensure("luke/.Junk");
    store.ensure("luke/.Junk");  // again: the file is taken as it is
    store.ensure("leia");
  });
  const auto junk = dir.path / "mail" / "luke" / ".Junk";
  for (const char* sub : {"tmp", "new", "cur"}) CHECK(mode_of(junk / sub) == 0700);
  REQUIRE(fs::is_regular_file(fs::symlink_status(junk / "maildirfolder")));
  CHECK(fs::file_size(junk / "maildirfolder") == 0);
  CHECK(mode_of(junk / "maildirfolder") == 0600);
  CHECK_FALSE(fs::exists(dir.path / "mail" / "leia" / "maildirfolder"));  // the inbox is the Maildir itself
  CHECK_FALSE(fs::exists(dir.path / "mail" / "luke" / "maildirfolder"));
}
