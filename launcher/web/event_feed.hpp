// GET /api/v1/events without any HTTP library: every event line a child
// writes on its stdout ("2026-11-22T03:01:02.345Z id=Q1 event=accepted ...")
// becomes one Server-Sent Event, "id: N\ndata: {json}\n\n", with ids that
// increase for the launcher's whole run. The latest events are kept (bounded
// in count and bytes) for a client that resumes with Last-Event-ID. Each
// client has a bounded queue: a client that falls behind it is dropped, so a
// stalled reader never holds the launcher or its memory. A client may ask for
// some events only (GET /api/v1/events?events=state,relayed); an event's JSON
// is made only when some client wants it, once for all of them, so that a
// launcher whose clients want few events (the network page) or none spends
// little on the many lines a loaded node writes. Single-threaded: the
// launcher's io_context calls everything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailnet::launcher::web {

// Which events a client wants: every one, or those named.
struct event_filter {
  std::vector<std::string> names;  // empty: every event
  bool wants(std::string_view event) const;
};

// The query of GET /api/v1/events, "since=N&events=a,b" (both optional), or
// why it is refused (a 400): an unknown parameter or event name, a bad number.
struct events_query {
  std::optional<std::uint64_t> since;
  event_filter filter;
  std::string error;  // empty when the query is good
};
events_query parse_events_query(std::string_view query);

struct event_feed_limits {
  std::size_t recent_events = 1000;         // kept for Last-Event-ID
  std::size_t recent_bytes = 4u << 20;      // and no more bytes (of their lines) than this
  std::size_t client_events = 2000;         // a client this far behind is dropped
  std::size_t client_bytes = 4u << 20;      // or this many bytes behind
};

class event_feed {
 public:
  struct client {
    std::deque<std::string> frames;  // not yet sent
    std::size_t bytes = 0;
    bool dropped = false;
    std::function<void()> wake;  // called when frames arrive or the client is dropped
    event_filter filter;
  };

  explicit event_feed(event_feed_limits limits = {});

  // One line of node's stdout; a line that is not an event is ignored.
  void publish(std::string_view node, std::string_view line);

  // A new client; with last_id, it starts with the kept events after it
  // (those its filter wants).
  std::shared_ptr<client> subscribe(std::optional<std::uint64_t> last_id, event_filter filter = {});
  void unsubscribe(const std::shared_ptr<client>& c);

  std::uint64_t last_id() const { return next_id_ - 1; }
  std::size_t clients() const { return clients_.size(); }
  std::size_t dropped() const { return dropped_; }  // clients dropped so far

 private:
  event_feed_limits limits_;
  std::uint64_t next_id_ = 1;
  // The lines themselves: their frames are made again for a client that
  // resumes, which is rare, rather than for every line that comes.
  struct kept {
    std::uint64_t id;
    std::string node;
    std::string line;
    std::string event;
  };
  std::deque<kept> recent_;
  std::size_t recent_bytes_ = 0;
  std::vector<std::shared_ptr<client>> clients_;
  std::size_t dropped_ = 0;
};

// The event name of a line ("accepted" of "2026-... id=Q1 event=accepted
// ..."), found without parsing the whole line: the first " event=" is the
// line's own, only the timestamp and an id come before it. Empty when none.
std::string_view event_name(std::string_view line);

// The SSE frame of one event line of node, or nullopt when the line is not an
// event: {"time", "node", "event", the line's other fields} as JSON.
std::optional<std::string> event_frame(std::uint64_t id, std::string_view node, std::string_view line);

// The event line the launcher itself publishes when a child's state changes
// (a node's own stdout says nothing when it is killed):
// "2026-11-22T03:01:02.345Z event=state state=killed exit=\"signal 9\"",
// exit only when given, values quoted as the nodes quote theirs.
std::string state_event_line(std::string_view state, std::string_view exit_text);

}  // namespace mailnet::launcher::web
