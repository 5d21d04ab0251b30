// bad_free: one bad free per run, in a build with the slab's debug checks on (MEMCG_DEBUG=1),
// for the ctest tests slab_bad_free/*: each must abort with the slab's message (the tests match
// it). Usage: bad_free double_free | double_kfree | foreign_kfree | foreign_cache_free |
// wrong_cache. Reaching the end (the bad free went unnoticed) prints "not caught".
// Under ASan the slab sits on the system allocator, and ASan may see a freed or foreign block
// first (its report is accepted there).
#include <csignal>
#include <cstdio>
#include <cstring>

#include <unistd.h>

#include "memcg/hierarchy.hpp"
#include "memcg/slab.hpp"

#if !defined(MEMCG_DEBUG) || MEMCG_DEBUG < 1
#error "bad_free needs the slab's debug checks (MEMCG_DEBUG >= 1)"
#endif

extern "C" void on_abort(int) {
  static const char msg[] = "bad_free: aborted\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::signal(SIGABRT, &on_abort);
  const char* what = argv[1];
  memcg::hierarchy h;
  memcg::group* g = h.mkdir("a").g;
  memcg::scoped_active_memcg s(g);
  memcg::kmem_cache a("a", 64, 8, memcg::slab_flags::account);
  memcg::kmem_cache b("b", 64, 8, memcg::slab_flags::account);
  if (!std::strcmp(what, "double_free")) {
    void* p = a.alloc();
    a.free(p);
    a.free(p);
  } else if (!std::strcmp(what, "double_kfree")) {
    void* p = memcg::kmalloc(100, memcg::GFP_KERNEL_ACCOUNT);
    memcg::kfree(p);
    memcg::kfree(p);
  } else if (!std::strcmp(what, "foreign_kfree")) {
    alignas(16) static char not_ours[256];
    memcg::kfree(not_ours);
  } else if (!std::strcmp(what, "foreign_cache_free")) {
    alignas(16) static char not_ours[256];  // zeroed: no live tag where a's tag would be
    a.free(not_ours);
  } else if (!std::strcmp(what, "wrong_cache")) {
    void* p = a.alloc();
    b.free(p);
  } else {
    return 2;
  }
  std::puts("not caught");
  return 0;
}
