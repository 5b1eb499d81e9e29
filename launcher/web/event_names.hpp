// The names of the events a child or the launcher writes ("... event=NAME
// ..."): what GET /api/v1/events?events=a,b accepts. The list itself is in
// event_names.cpp, one name a line.
#pragma once

#include <span>
#include <string_view>

namespace mailnet::launcher::web {

// Every known event name, sorted.
std::span<const std::string_view> known_events();

bool is_known_event(std::string_view name);

}  // namespace mailnet::launcher::web
