// Whether a process goes through its whole teardown at exit (destructors,
// joined threads, the libraries' exit handlers) or ends with _exit once
// what must be on disk is written. A normal build ends at once: the kernel
// takes threads, memory and descriptors back, and the teardown was most of
// a process's stop, times a thousand nodes at `mailnet down`. Under the
// sanitizers the teardown runs, so that the tests see what is freed and
// what leaks.
#pragma once

namespace mailnet {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool full_teardown_at_exit = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
inline constexpr bool full_teardown_at_exit = true;
#else
inline constexpr bool full_teardown_at_exit = false;
#endif
#else
inline constexpr bool full_teardown_at_exit = false;
#endif

}  // namespace mailnet
