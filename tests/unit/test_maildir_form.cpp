#include <doctest/doctest.h>

#include <string>

#include "common/mail/data_reader.hpp"
#include "node/maildir.hpp"
#include "node/trace_headers.hpp"

using mailnet::node::maildir_form;

TEST_CASE("Maildir form: each CRLF becomes LF, bare LF and lone CR stay as Postfix keeps them") {
  CHECK(maildir_form("") == "");
  CHECK(maildir_form("Subject: x\r\n\r\nbody\r\n") == "Subject: x\n\nbody\n");
  CHECK(maildir_form("no line end") == "no line end");
  CHECK(maildir_form("a\nb\r\n") == "a\nb\n");            // a bare LF is a line end already
  CHECK(maildir_form("a\rb\r\n") == "a\rb\n");            // a lone CR is content
  CHECK(maildir_form("a\r\r\nb") == "a\r\nb");            // one CR stripped before the LF, as Postfix does
  CHECK(maildir_form("trailing\r") == "trailing\r");
  CHECK(maildir_form("\r\n\r\n.\r\n") == "\n\n.\n");
}

TEST_CASE("Maildir form: a message in it goes out on the wire as the CRLF original does") {
  // The queue keeps the wire form; this holds for any message without a CR
  // right before a CRLF, so a reader that sends a stored file sends the same bytes.
  for (const std::string m : {"Subject: x\r\n\r\n.dot\r\nline\r\n", "a\nb\rc\r\n..\r\n", "no end"}) {
    CHECK(mailnet::node::dot_stuff_for_wire(maildir_form(m)) == mailnet::node::dot_stuff_for_wire(m));
    CHECK(mailnet::node::counted_size(maildir_form("Subject: s\r\n\r\n" + m)) ==
          mailnet::node::counted_size("Subject: s\r\n\r\n" + m));
  }
}
