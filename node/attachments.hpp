// Attachments of a delivered message, decoded and saved as plain files under
// <domain>/attachments/<message>/<file name>. The .eml in the Maildir is the
// mail; these files are a convenience, so a failure here is reported and
// never stops a delivery. Blocking: run it on the disk pool.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/mail/mime_parse.hpp"

namespace mailnet::node {

struct extraction_result {
  std::vector<std::filesystem::path> saved;  // in the order of the parts
  std::string error;                         // empty when every attachment was saved
  std::string reason;                        // when nothing was saved and nothing failed: why
};

// Never throws for malformed MIME or disk trouble: both end up in error.
// message_name must be a plain name (the Maildir file name is used); it
// becomes the folder under attachments_root.
extraction_result extract_attachments(std::string_view message, const std::filesystem::path& attachments_root,
                                      const std::string& message_name, const mime_limits& limits = {});

// A file name safe to create in a folder: ASCII letters, digits, '.', '-',
// '_', '+', inner spaces, and letters of other scripts (well-formed UTF-8,
// without control, invisible or direction-changing characters); anything
// else becomes '_' (runs of '_' collapse). No leading dot, '-' or space, at
// most max_file_name bytes with the extension kept, never cut inside a
// character. Never empty: "attachment" stands in for a name with nothing left.
inline constexpr std::size_t max_file_name = 100;
std::string sanitize_file_name(std::string_view name);

}  // namespace mailnet::node
