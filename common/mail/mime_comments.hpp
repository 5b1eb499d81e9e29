// RFC 822 comments in the MIME fields that shape a message. RFC 2045 §5.1
// allows "(comments)" between the tokens of Content-Type (and RFC 2183 of
// Content-Disposition), as in `multipart(x)/mixed; boundary=b1 (note)`.
// GMime reads the comment after an unquoted parameter value as part of the
// value (the boundary becomes "b1 (note)" and no part is ever found), so the
// attachment extractor removes them first. No GMime here: the node uses
// the same reading to decide whether a message may carry attachments.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mailnet::node {

// value with every comment outside quoted strings replaced by one space
// (nested comments and quoted pairs as RFC 822 §3.4.3 has them).
std::string strip_comments(std::string_view value);

// The message with the comments taken out of the Content-Type and
// Content-Disposition fields of every header block its MIME structure
// reaches: the top, each part of each multipart, each enclosed
// message/rfc822. Every other byte is left as it is. nullopt when there is
// no such comment (nothing to change).
std::optional<std::string> without_mime_comments(std::string_view message);

// Whether the top-level header block says the message can carry
// attachments: a multipart or message/* type (comments or not), a
// Content-Disposition, or a file name. Plain mail is spared the MIME parse.
bool may_carry_attachments(std::string_view message);

}  // namespace mailnet::node
