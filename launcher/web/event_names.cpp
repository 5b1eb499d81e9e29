#include "launcher/web/event_names.hpp"

#include <algorithm>
#include <array>

namespace mailnet::launcher::web {

namespace {

// Every event name written by node/, resolver/ and the launcher (its own
// "state"). A new event gets its line here, in sorted order, and a sentence in
// README.md's "Events" list if a client may care: a client that asks the
// stream for a name missing here gets 400, so that a typo is told rather than
// met with silence. tests/layout/check_event_names.py fails for a name that
// the sources write and this list lacks.
constexpr std::array names = {
    std::string_view("accept_error"),
    std::string_view("accept_loop_error"),
    std::string_view("accepted"),
    std::string_view("attachment_error"),
    std::string_view("attachments"),
    std::string_view("auth"),
    std::string_view("auth_failed"),
    std::string_view("bind_failed"),
    std::string_view("bounce_deferred"),
    std::string_view("bounce_dropped"),
    std::string_view("bounce_failed"),
    std::string_view("bounce_queued"),
    std::string_view("bounced"),
    std::string_view("commit_failed"),
    std::string_view("connect"),
    std::string_view("corrupt_move_failed"),
    std::string_view("corrupt_queue_file"),
    std::string_view("crashed"),
    std::string_view("deferred"),
    std::string_view("delivered"),
    std::string_view("disconnect"),
    std::string_view("disk_error"),
    std::string_view("dkim"),
    std::string_view("dmarc"),
    std::string_view("dropped"),
    std::string_view("fault"),
    std::string_view("fault_rules"),
    std::string_view("fault_rules_error"),
    std::string_view("faults"),
    std::string_view("fcrdns"),
    std::string_view("fd_limit"),
    std::string_view("flush"),
    std::string_view("port_busy"),
    std::string_view("query"),
    std::string_view("queue_error"),
    std::string_view("ready"),
    std::string_view("receive_error"),
    std::string_view("recovered"),
    std::string_view("refused_fd_limit"),
    std::string_view("relay_attempt"),
    std::string_view("relay_error"),
    std::string_view("relayed"),
    std::string_view("removed"),
    std::string_view("send_error"),
    std::string_view("session_error"),
    std::string_view("spf"),
    std::string_view("state"),
    std::string_view("stopped"),
    std::string_view("stopping"),
    std::string_view("tcp_unavailable"),
    std::string_view("tls"),
    std::string_view("tls_failed"),
    std::string_view("tls_pipelining_discarded"),
    std::string_view("tls_unavailable"),
};

static_assert(std::is_sorted(names.begin(), names.end()), "keep the event names sorted");

}  // namespace

std::span<const std::string_view> known_events() { return names; }

bool is_known_event(std::string_view name) { return std::binary_search(names.begin(), names.end(), name); }

}  // namespace mailnet::launcher::web
