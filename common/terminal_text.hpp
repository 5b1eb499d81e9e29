// Text that came from mail, logs or another server, made safe to print on a
// terminal. A subject or a log field can carry escape sequences (ESC, CSI,
// OSC: retitle the window, erase lines, fake output), C1 controls that some
// terminals obey as 8-bit CSI, or bidi controls that reorder what is shown.
// Each of those is printed as a visible escape instead (\x1b, \u202e), and so
// is every byte that is not part of well-formed UTF-8. Backslashes are kept
// as they are: the aim is a harmless display, not a reversible encoding.
#pragma once

#include <string>
#include <string_view>

namespace mailnet {

enum class newlines {
  escape,  // one-line fields: a newline is shown as \n
  keep,    // a body: LF and CRLF end a line; a lone CR is still \r
};

// Appends text to out with every control character escaped: C0 except tab
// (and LF with newlines::keep), DEL, C1 (U+0080-U+009F, also as raw bytes),
// the bidi controls U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069,
// the separators U+2028 and U+2029, and invalid UTF-8, byte by byte.
// Printable text of any script (wide CJK, emoji) is kept as it is.
void append_terminal_safe(std::string& out, std::string_view text, newlines mode = newlines::escape);

std::string terminal_safe(std::string_view text, newlines mode = newlines::escape);

}  // namespace mailnet
