#include "resolver/tcp_slots.hpp"

#include <utility>

namespace mailnet::resolver {

tcp_slots::slot_id tcp_slots::add(std::function<void()> close, clock::time_point now) {
  const slot_id id = next_++;
  slots_.emplace(id, slot{std::move(close), false, now});
  return id;
}

void tcp_slots::query_started(slot_id id, clock::time_point now) {
  if (auto it = slots_.find(id); it != slots_.end()) it->second = {std::move(it->second.close), true, now};
}

void tcp_slots::query_done(slot_id id, clock::time_point now) {
  if (auto it = slots_.find(id); it != slots_.end()) it->second = {std::move(it->second.close), false, now};
}

void tcp_slots::remove(slot_id id) { slots_.erase(id); }

bool tcp_slots::evict() {
  auto victim = slots_.end();
  for (auto it = slots_.begin(); it != slots_.end(); ++it) {
    if (victim == slots_.end()) {
      victim = it;
      continue;
    }
    const slot& a = it->second;
    const slot& b = victim->second;
    // Idle before busy; among equals, the one in that state the longest.
    if (a.in_query != b.in_query ? !a.in_query : a.since < b.since) victim = it;
  }
  if (victim == slots_.end()) return false;
  auto close = std::move(victim->second.close);
  slots_.erase(victim);  // before close(), which may end the session and call remove()
  if (close) close();
  return true;
}

void tcp_slots::close_all() {
  auto all = std::move(slots_);
  slots_.clear();
  for (auto& [id, s] : all)
    if (s.close) s.close();
}

}  // namespace mailnet::resolver
