// A query's %-escapes undone, without any HTTP library: shared by the routes
// that read a query (messages, the event stream's filter).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailnet::launcher::web {

// "%41b+c" -> "Ab c" (with plus_space); nullopt for a broken escape or a NUL.
std::optional<std::string> percent_decode(std::string_view s, bool plus_space);

}  // namespace mailnet::launcher::web
