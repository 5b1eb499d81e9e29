#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

#include "common/passwords.hpp"
#include "common/private_files.hpp"

using namespace mailnet;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "mailnet-pw-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~temp_dir() { fs::remove_all(path); }
};

topology net_with(const std::string& users) {
  return parse_topology(R"({"name": "t", "domains": [{"name": "Jaku.com", "listen": "127.0.0.1:1", "users": )" + users +
                            "}]}",
                        "topo.json");
}

}  // namespace

TEST_CASE("generated passwords: 20 letters and digits, all different") {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto p = generate_password();
    CHECK(p.size() == 20);
    CHECK(is_valid_password(p));
    for (char c : p) CHECK(std::isalnum(static_cast<unsigned char>(c)));
    seen.insert(p);
  }
  CHECK(seen.size() == 200);
}

TEST_CASE("the passwords file: 0600 whatever the umask, topology passwords as given, generated ones kept") {
  temp_dir dir;
  const mode_t old = ::umask(0);
  auto first = prepare_passwords(dir.path, net_with(R"(["rey", {"name": "Finn", "password": "s3cret pw"}])"));
  ::umask(old);
  struct stat st {};
  REQUIRE(::stat(passwords_file(dir.path).c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(first.size() == 2);
  CHECK(first[0].address() == "rey@jaku.com");
  CHECK(first[0].password.size() == 20);
  CHECK(first[1].password == "s3cret pw");

  auto read = read_passwords(passwords_file(dir.path));
  REQUIRE(read.size() == 2);
  CHECK(read[0].password == first[0].password);

  // Kept across `up`; a changed topology password replaces the old one.
  auto again = prepare_passwords(dir.path, net_with(R"(["rey", {"name": "Finn", "password": "new"}])"));
  CHECK(again[0].password == first[0].password);
  CHECK(again[1].password == "new");

  CHECK(check_password(again, "finn@JAKU.com", "other.com", "new"));
  CHECK(check_password(again, "FINN", "jaku.com", "new"));
  CHECK_FALSE(check_password(again, "finn", "jaku.com", "ne"));
  CHECK_FALSE(check_password(again, "finn", "jaku.com", "new "));
  CHECK_FALSE(check_password(again, "finn", "other.com", "new"));
  CHECK_FALSE(check_password(again, "nobody", "jaku.com", ""));
  CHECK(find_password(again, "rey", "jaku.com") == &again[0]);
}

TEST_CASE("the passwords file: a link is refused, a bad line is named") {
  temp_dir dir;
  fs::create_symlink("/etc/passwd", passwords_file(dir.path));
  CHECK_THROWS_AS(read_passwords(passwords_file(dir.path)), unsafe_path_error);
  CHECK_THROWS_AS(prepare_passwords(dir.path, net_with(R"(["rey"])")), unsafe_path_error);
  fs::remove(passwords_file(dir.path));
  write_private_file(passwords_file(dir.path), "# comment\nrey@jaku.com:{PLAIN}ok\nfinn@jaku.com:secret\n");
  try {
    read_passwords(passwords_file(dir.path));
    FAIL("no error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("passwords: line 3: expected the scheme {PLAIN}") != std::string::npos);
  }
}
