// memcg/detail/call.hpp: calls into user code that may throw, in builds with and without
// exceptions (-fno-exceptions), written once.
//
//   call_catching(f)      f(); false if it threw (the exception stops here)
//   call_or_undo(f, u)    f(); if it throws, u() and the exception goes on
//   throw_bad_alloc()     std::bad_alloc, or abort() without exceptions
#pragma once

#include <cstdlib>
#include <new>
#include <utility>

namespace memcg::detail {

// For callbacks (listeners, reclaimers, OOM handlers, policies): an exception must not unwind
// through the library's charge and delivery paths. The caller reports a false return.
template <class F>
[[nodiscard]] bool call_catching(F&& f) noexcept {
#if defined(__cpp_exceptions)
  try {
    std::forward<F>(f)();
  } catch (...) {
    return false;
  }
#else
  std::forward<F>(f)();
#endif
  return true;
}

// For a constructor run on memory the library handed out: a throw gives the memory back first.
template <class F, class Undo>
decltype(auto) call_or_undo(F&& f, Undo&& undo) {
#if defined(__cpp_exceptions)
  try {
    return std::forward<F>(f)();
  } catch (...) {
    std::forward<Undo>(undo)();
    throw;
  }
#else
  (void)undo;
  return std::forward<F>(f)();
#endif
}

[[noreturn]] inline void throw_bad_alloc() {
#if defined(__cpp_exceptions)
  throw std::bad_alloc();
#else
  std::abort();
#endif
}

}  // namespace memcg::detail
