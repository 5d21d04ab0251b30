// memcg/detail/rseq.hpp: the page stock's fast paths as restartable sequences (rseq(2)).
//
// Contents:
//   MEMCG_STOCK_RSEQ   1 where the fast paths below are compiled in (x86-64 Linux, glibc that
//                      registers rseq, not under TSan, not disabled with -DMEMCG_STOCK_RSEQ=0;
//                      every translation unit of a program must agree, as with any macro that
//                      changes an inline function)
//   rseq_registered()  the calling thread has an rseq area registered with the kernel
//   rseq_take()        slot.nr -= n if slot.key == want and slot.nr >= n, as one critical section
//   rseq_park()        slot.nr += n if slot.key == want and slot.nr + n <= limit, likewise
// Both serve the page stock (nr in pages) and the byte stock (nr in bytes).
//
// Why: a stock hit must not race with a thread draining that stock (stock.hpp). With a busy
// flag the owner pays two stores per hit; as a restartable sequence it pays one (the pointer
// to the critical section's descriptor) and the drainer pays membarrier(2)'s RSEQ command,
// which restarts every sibling thread's critical section that is running or preempted. A
// critical section ends in its single commit store; one that is restarted takes the slow path,
// which tests `pending` under the busy flag, as the busy-flag stock does. This is what the kernel's per-CPU stock
// gets from disabling interrupts, and what tcmalloc's per-CPU caches get from rseq.
//
// Where MEMCG_STOCK_RSEQ is 0 the stock keeps the busy-flag fast path (and TSan checks it).
#pragma once

#include <cstdint>

#include "memcg/config.hpp"

// glibc's rseq registration (__rseq_offset, __rseq_size): glibc 2.35 and later.
#if defined(__linux__) && __has_include(<sys/rseq.h>)
#define MEMCG_HAVE_SYS_RSEQ 1
#include <sys/rseq.h>
#else
#define MEMCG_HAVE_SYS_RSEQ 0
#endif

#if !defined(MEMCG_STOCK_RSEQ)
#if defined(__x86_64__) && !defined(__ILP32__) && defined(__GNUC__) && \
    !defined(MEMCG_TSAN_BUILD) && MEMCG_HAVE_SYS_RSEQ
#define MEMCG_STOCK_RSEQ 1
#else
#define MEMCG_STOCK_RSEQ 0
#endif
#endif

namespace memcg::detail {

#if MEMCG_STOCK_RSEQ

// glibc (2.35 and later) registers an rseq area for every thread it starts, at the thread
// pointer plus __rseq_offset; __rseq_size is 0 when the kernel refused (or a tunable turned it
// off). cpu_id reads -1 (uninitialized) or -2 (registration failed) in a thread without one.
inline bool rseq_registered() noexcept {
  if (__rseq_size == 0) return false;
  std::int32_t cpu_id;  // struct rseq's second word
  __asm__ volatile("movl %%fs:4(%1), %0" : "=r"(cpu_id) : "r"(__rseq_offset));
  return cpu_id >= 0;
}

// The x86 signature glibc registers (RSEQ_SIG); the kernel checks the 4 bytes before an abort
// handler against it. Emitted as the operand of `ud1`, so the bytes never decode as code.
// The descriptor (struct rseq_cs: version, flags, start_ip, post_commit_offset, abort_ip) goes
// to its own section; its address is stored in the area's rseq_cs field (offset 8) first.
// Labels: 1 start, 2 post-commit, 3 descriptor, 4 abort handler (which counts as a miss).
#define MEMCG_RSEQ_ENTER                                                       \
  ".pushsection __rseq_cs, \"aw?\"\n\t"                                        \
  ".balign 32\n"                                                               \
  "3:\n\t"                                                                     \
  ".long 0, 0\n\t"                                                             \
  ".quad 1f, (2f - 1f), 4f\n\t"                                                \
  ".popsection\n\t"                                                            \
  ".pushsection __rseq_failure, \"ax?\"\n\t"                                   \
  ".byte 0x0f, 0xb9, 0x3d\n\t"                                                 \
  ".long 0x53053053\n"                                                         \
  "4:\n\t"                                                                     \
  "jmp %l[miss]\n\t"                                                           \
  ".popsection\n\t"                                                            \
  "leaq 3b(%%rip), %%rax\n\t"                                                  \
  "movq %%rax, %%fs:8(%[area])\n"                                              \
  "1:\n\t"

// The key compared, the pages loaded (into rax), then, after the test, the commit store: the
// last instruction of the sequence.
#define MEMCG_RSEQ_LOAD      \
  "cmpq %[want], %[key]\n\t" \
  "jne %l[miss]\n\t"         \
  "movq %[nr], %%rax\n\t"
#define MEMCG_RSEQ_COMMIT \
  "movq %%rax, %[nr]\n"   \
  "2:\n"
#define MEMCG_RSEQ_INPUTS \
  [area] "r"(__rseq_offset), [want] "r"(want), [n] "r"(n), [key] "m"(key), [nr] "m"(nr)

// Takes n pages from a slot: the key compare, the pages test and the commit store in one
// restartable sequence. Key, Nr: the slot's 8-byte cells (same layout as std::int64_t).
template <class Key, class Nr>
MEMCG_ALWAYS_INLINE bool rseq_take(const Key& key, Nr& nr, std::uintptr_t want,
                                   std::int64_t n) noexcept {
  static_assert(sizeof(Key) == 8 && sizeof(Nr) == 8);
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_LOAD
               "subq %[n], %%rax\n\t"
               "jl %l[miss]\n\t" MEMCG_RSEQ_COMMIT
               :
               : MEMCG_RSEQ_INPUTS
               : "rax", "memory", "cc"
               : miss);
  return true;
miss:
  return false;
}

// Parks n pages (or bytes) in a slot if it stays within limit; as rseq_take().
template <class Key, class Nr>
MEMCG_ALWAYS_INLINE bool rseq_park(const Key& key, Nr& nr, std::int64_t limit, std::uintptr_t want,
                                   std::int64_t n) noexcept {
  static_assert(sizeof(Key) == 8 && sizeof(Nr) == 8);
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_LOAD
               "addq %[n], %%rax\n\t"
               "cmpq %[limit], %%rax\n\t"
               "jg %l[miss]\n\t" MEMCG_RSEQ_COMMIT
               :
               : MEMCG_RSEQ_INPUTS, [limit] "r"(limit)
               : "rax", "memory", "cc"
               : miss);
  return true;
miss:
  return false;
}

#undef MEMCG_RSEQ_ENTER
#undef MEMCG_RSEQ_LOAD
#undef MEMCG_RSEQ_COMMIT
#undef MEMCG_RSEQ_INPUTS

#else

inline bool rseq_registered() noexcept { return false; }

#endif

}  // namespace memcg::detail
