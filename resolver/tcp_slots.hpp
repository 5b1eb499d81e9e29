// The resolver's TCP connections and whom to drop when all slots are taken.
// RFC 7766 §6.2.3 and §10 let a server under pressure close connections,
// idle ones first: so a newcomer is never refused while slow or silent
// clients hold every slot. No sockets here, only the bookkeeping.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>

namespace mailnet::resolver {

class tcp_slots {
 public:
  using clock = std::chrono::steady_clock;
  using slot_id = std::uint64_t;

  explicit tcp_slots(std::size_t capacity) : capacity_(capacity) {}

  // A new connection, idle (no query begun) since now; close ends it.
  slot_id add(std::function<void()> close, clock::time_point now);
  // The first byte of a query arrived / its reply went out. Unknown ids
  // (a connection dropped meanwhile) are ignored.
  void query_started(slot_id id, clock::time_point now);
  void query_done(slot_id id, clock::time_point now);
  void remove(slot_id id);

  bool full() const { return slots_.size() >= capacity_; }
  std::size_t size() const { return slots_.size(); }

  // Closes and forgets one connection: the one idle the longest, else the
  // one whose query began first (the slowest). False when there is none.
  bool evict();
  void close_all();

 private:
  struct slot {
    std::function<void()> close;
    bool in_query = false;
    clock::time_point since;  // idle since, or in its query since
  };
  std::size_t capacity_;
  slot_id next_ = 0;
  std::map<slot_id, slot> slots_;
};

}  // namespace mailnet::resolver
