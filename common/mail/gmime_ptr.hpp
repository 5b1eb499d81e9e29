// Owning pointers for GMime/GLib objects, for the files that include GMime.
#pragma once

#include <gmime/gmime.h>

#include <memory>

namespace mailnet::node {

struct gobject_unref {
  void operator()(void* p) const {
    if (p) g_object_unref(p);
  }
};
template <typename T>
using gobject_ptr = std::unique_ptr<T, gobject_unref>;

struct gfree {
  void operator()(void* p) const { g_free(p); }
};
using gchar_ptr = std::unique_ptr<char, gfree>;

}  // namespace mailnet::node
