// Attachment extraction for a running node, from mailnet-attachments.so
// beside the node's executable, loaded on first use (attachments_module.cpp).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "node/attachments.hpp"

namespace mailnet::node {

using extract_fn = extraction_result (*)(std::string_view message, const std::filesystem::path& attachments_root,
                                         const std::string& message_name);

// extract_attachments() through the module. Never throws: a module that
// cannot be loaded is the result's error.
extraction_result extract_attachments_via_module(std::string_view message,
                                                 const std::filesystem::path& attachments_root,
                                                 const std::string& message_name);

}  // namespace mailnet::node
