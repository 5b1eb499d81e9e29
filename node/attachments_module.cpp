// mailnet-attachments.so: the node's attachment extraction with GMime, GLib
// and their libraries, loaded by a node the first time a delivered message
// may carry attachments (attachment_loader.hpp). An idle node, or one that
// only ever sees plain mail, never maps them: they were about 2.7 MiB of its
// 9.5 MiB resident set (bench/README.md, "scale").
#include "node/attachment_loader.hpp"
#include "node/attachments.hpp"

namespace {

mailnet::node::extraction_result extract(std::string_view message, const std::filesystem::path& root,
                                         const std::string& name) {
  return mailnet::node::extract_attachments(message, root, name);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) const void* mailnet_attachments_entry() {
  static const mailnet::node::extract_fn fn = &extract;
  return &fn;
}
