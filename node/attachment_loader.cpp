#include "node/attachment_loader.hpp"

#include <dlfcn.h>
#include <mutex>
#include <system_error>

namespace mailnet::node {

namespace {

struct loaded {
  extract_fn fn = nullptr;
  std::string error;
};

const loaded& module() {
  static const loaded once = [] {
    loaded l;
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) {
      l.error = "cannot find the node's own folder: " + ec.message();
      return l;
    }
    const auto path = exe.parent_path() / "mailnet-attachments.so";
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // kept for the process's life
    if (!handle) {
      l.error = std::string("cannot load ") + path.string() + ": " + ::dlerror();
      return l;
    }
    auto entry = reinterpret_cast<const void* (*)()>(::dlsym(handle, "mailnet_attachments_entry"));
    if (!entry) {
      l.error = path.string() + " has no mailnet_attachments_entry";
      return l;
    }
    l.fn = *static_cast<const extract_fn*>(entry());
    return l;
  }();
  return once;
}

}  // namespace

extraction_result extract_attachments_via_module(std::string_view message,
                                                 const std::filesystem::path& attachments_root,
                                                 const std::string& message_name) {
  const auto& m = module();
  if (!m.fn) return {{}, m.error, {}};
  return m.fn(message, attachments_root, message_name);
}

}  // namespace mailnet::node
