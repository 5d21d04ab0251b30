// memcg/detail/rseq.hpp: the per-CPU stock's fast paths as restartable sequences (rseq(2)).
//
// Contents:
//   MEMCG_STOCK_RSEQ     1 where the stocks are per CPU (x86-64 Linux, glibc that registers rseq,
//                        not under TSan, not disabled with -DMEMCG_STOCK_RSEQ=0; every translation
//                        unit of a program must agree, as with any macro that changes an inline
//                        function). Elsewhere the stocks are per thread (memcg/stock.hpp).
//   rseq_registered()    the calling thread has an rseq area registered with the kernel
//   rseq_cpu_id()        the CPU it runs on (stale as soon as it is read, outside a sequence)
//   rseq_cpu_take()      this CPU's slot: nr -= n if key == want and nr >= n
//   rseq_cpu_park()      this CPU's slot: nr += n if key == want and nr + n <= the slot's limit
//   rseq_cpu_park_upto() ... within a limit given by the caller
// Each is one critical section: the CPU read, the key compare, the test and one commit store.
// They serve the page stock (nr in pages) and the byte stock (nr in bytes).
//
// Why: the kernel's stock is per CPU and its owner disables interrupts around a hit. Here the
// kernel restarts a critical section that is preempted, migrated or interrupted by a signal
// before its commit, so a hit never writes a slot that another thread of the same CPU, or a
// thread that took the slot meanwhile, is using: what tcmalloc's per-CPU caches do. A thread
// of another CPU that must write this CPU's slot marks its key first and then restarts every
// running sequence with membarrier(2)'s RSEQ command (memcg/stock.hpp).
#pragma once

#include <bit>
#include <cstddef>
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

// The CPU the calling thread runs on (the area's cpu_id); only meaningful where
// rseq_registered(). Outside a restartable sequence it may be stale by the time it is used.
inline int rseq_cpu_id() noexcept {
  std::int32_t cpu_id;
  __asm__ volatile("movl %%fs:4(%1), %0" : "=r"(cpu_id) : "r"(__rseq_offset));
  return cpu_id;
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

// Inside the sequence: this CPU's slot (rcx = slot0 + cpu_id * stride), its key compared, its
// count loaded into rax. Then, after the test, the commit store: the last instruction.
// A stride that is a power of two is a shift (one cycle, not imul's three on the address).
#define MEMCG_RSEQ_CPU_LOAD                                  \
  "movslq %%fs:4(%[area]), %%rcx\n\t"                        \
  ".if (%c[stride] & (%c[stride] - 1)) == 0\n\t"             \
  "shlq %[shift], %%rcx\n\t"                                 \
  ".else\n\t"                                                \
  "imulq %[stride], %%rcx, %%rcx\n\t"                        \
  ".endif\n\t"                                               \
  "addq %[slot0], %%rcx\n\t"                                 \
  "cmpq %[want], (%%rcx)\n\t"                               \
  "jne %l[miss]\n\t"                                        \
  "movq %c[nr](%%rcx), %%rax\n\t"
#define MEMCG_RSEQ_CPU_COMMIT      \
  "movq %%rax, %c[nr](%%rcx)\n"    \
  "2:\n"
#define MEMCG_RSEQ_CPU_INPUTS                                                            \
  [area] "r"(__rseq_offset), [slot0] "r"(slot0), [want] "r"(want), [n] "r"(n),           \
      [stride] "i"(Stride), [shift] "i"(std::countr_zero(Stride)), [nr] "i"(NrOff)

// The per-CPU slots: CPU c's slot is at slot0 + c * Stride; its first word is the key, the
// count is NrOff bytes further. The CPU is read inside the sequence, so a thread preempted or
// migrated before the commit restarts (and misses) instead of writing another CPU's slot.

// Takes n from this CPU's slot if its key is want and it holds n.
template <std::size_t Stride, std::size_t NrOff>
MEMCG_ALWAYS_INLINE bool rseq_cpu_take(void* slot0, std::uintptr_t want, std::int64_t n) noexcept {
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_CPU_LOAD
               "subq %[n], %%rax\n\t"
               "jl %l[miss]\n\t" MEMCG_RSEQ_CPU_COMMIT
               :
               : MEMCG_RSEQ_CPU_INPUTS
               : "rax", "rcx", "memory", "cc"
               : miss);
  return true;
miss:
  return false;
}

// Adds n to this CPU's slot if its key is want and the count stays within the slot's own limit
// word (LimitOff bytes from the key).
template <std::size_t Stride, std::size_t NrOff, std::size_t LimitOff>
MEMCG_ALWAYS_INLINE bool rseq_cpu_park(void* slot0, std::uintptr_t want, std::int64_t n) noexcept {
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_CPU_LOAD
               "addq %[n], %%rax\n\t"
               "cmpq %c[limit](%%rcx), %%rax\n\t"
               "jg %l[miss]\n\t" MEMCG_RSEQ_CPU_COMMIT
               :
               : MEMCG_RSEQ_CPU_INPUTS, [limit] "i"(LimitOff)
               : "rax", "rcx", "memory", "cc"
               : miss);
  return true;
miss:
  return false;
}

// Adds n to this CPU's slot if its key is want and the count stays within limit.
template <std::size_t Stride, std::size_t NrOff>
MEMCG_ALWAYS_INLINE bool rseq_cpu_park_upto(void* slot0, std::int64_t limit, std::uintptr_t want,
                                            std::int64_t n) noexcept {
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_CPU_LOAD
               "addq %[n], %%rax\n\t"
               "cmpq %[limit], %%rax\n\t"
               "jg %l[miss]\n\t" MEMCG_RSEQ_CPU_COMMIT
               :
               : MEMCG_RSEQ_CPU_INPUTS, [limit] "r"(limit)
               : "rax", "rcx", "memory", "cc"
               : miss);
  return true;
miss:
  return false;
}

#undef MEMCG_RSEQ_ENTER
#undef MEMCG_RSEQ_CPU_LOAD
#undef MEMCG_RSEQ_CPU_COMMIT
#undef MEMCG_RSEQ_CPU_INPUTS

#else

inline bool rseq_registered() noexcept { return false; }
inline int rseq_cpu_id() noexcept { return 0; }

#endif

}  // namespace memcg::detail
