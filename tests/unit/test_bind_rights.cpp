// Who may listen below ip_unprivileged_port_start: the launcher's own
// capability covers only the web port; nodes and the resolver hold after
// their exec what root's bounding set, the ambient set or their file's
// capability attribute gives them.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "common/topology.hpp"
#include "launcher/bind_rights.hpp"

using namespace mailnet;
using namespace mailnet::launcher;

namespace {

constexpr std::uint64_t bind_bit = std::uint64_t{1} << 10;

std::string le32(std::uint32_t v) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  return out;
}

// What `setcap cap_net_bind_service=+ep` writes (revision 2), or =+p without the effective flag.
std::string xattr_v2(std::uint32_t permitted_low, bool effective) {
  return le32(0x02000000 | (effective ? 1U : 0U)) + le32(permitted_low) + le32(0) + le32(0) + le32(0);
}

topology net_on(int node_port, int resolver_port, int web_port) {
  return parse_topology(R"({"name": "t", "resolver": {"listen": "127.0.0.1:)" + std::to_string(resolver_port) +
                            R"("}, "web": {"listen": "127.0.0.1:)" + std::to_string(web_port) +
                            R"("}, "domains": [{"name": "jaku.com", "listen": "127.0.0.1:)" +
                            std::to_string(node_port) + R"(", "users": ["rey"]}]})",
                        "topo.json");
}

}  // namespace

TEST_CASE("a file capability counts only when it permits the bind and raises it as effective") {
  CHECK(file_grants_bind_service(xattr_v2(1U << 10, true)));
  CHECK_FALSE(file_grants_bind_service(xattr_v2(1U << 10, false)));
  CHECK_FALSE(file_grants_bind_service(xattr_v2(1U << 12, true)));  // CAP_NET_ADMIN, not bind
  CHECK_FALSE(file_grants_bind_service(""));
  CHECK_FALSE(file_grants_bind_service(le32(0x02000001) + le32(1U << 10)));  // revision 2 cut short
  CHECK(file_grants_bind_service(le32(0x01000001) + le32(1U << 10) + le32(0)));  // revision 1
  CHECK_FALSE(file_grants_bind_service(le32(0x07000001) + le32(1U << 10) + le32(0) + le32(0) + le32(0)));
}

TEST_CASE("what survives the exec of a node or the resolver") {
  const capability_sets full{bind_bit, ~std::uint64_t{0}, 0};
  CHECK(exec_keeps_bind_service(full, true, ""));  // root: its bounding set
  CHECK_FALSE(exec_keeps_bind_service(full, false, ""));  // setcap on mailnet alone is lost at exec
  CHECK(exec_keeps_bind_service(full, false, xattr_v2(1U << 10, true)));
  CHECK(exec_keeps_bind_service({bind_bit, ~std::uint64_t{0}, bind_bit}, false, ""));  // ambient
  CHECK_FALSE(exec_keeps_bind_service({0, 0, 0}, true, ""));  // root in a container without the bit
  CHECK_FALSE(exec_keeps_bind_service({0, ~bind_bit, 0}, false, xattr_v2(1U << 10, true)));
}

TEST_CASE("each listener is checked against the binary that binds it") {
  bind_rights launcher_only;
  launcher_only.net_bind_service = true;
  auto problem = privileged_port_problem(net_on(25, 5353, 8025), launcher_only);
  CHECK(problem.find("$.domains[0].listen (jaku.com): port 25") != std::string::npos);
  CHECK(problem.find("mailnet-node") != std::string::npos);
  CHECK(problem.find("setcap") != std::string::npos);

  CHECK(privileged_port_problem(net_on(2525, 53, 8025), launcher_only).find("$.resolver.listen") == 0);

  bind_rights children_only;
  children_only.node_bind_service = children_only.resolver_bind_service = true;
  CHECK(privileged_port_problem(net_on(25, 53, 8025), children_only).empty());
  CHECK(privileged_port_problem(net_on(25, 53, 80), children_only).find("$.web.listen") == 0);
  CHECK(privileged_port_problem(net_on(2525, 5353, 8025), bind_rights{}).empty());
}
