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
//   rseq_oc_pop()        this CPU's object cache (memcg/slab.hpp): its first object, if its key
//                        is want
//   rseq_oc_push()       ... an object onto it, if its key is want and it holds fewer than cap
//   rseq_oc_claim()      ... its key made want, if it is empty
//   rseq_oc_take_all()   ... all its objects, if its key is want
// Each is one critical section: the CPU read, the key compare, the test and one commit store.
// They serve the page stock (nr in pages), the byte stock (nr in bytes) and the slab's object
// caches (a list in one word; the CPU's stock's byte key must carry no busy bit: a holder of
// that stock owns the CPU's object caches).
//
// Why: the kernel's stock is per CPU and its owner disables interrupts around a hit. Here the
// kernel restarts a critical section that is preempted, migrated or interrupted by a signal
// before its commit, so a hit never writes a slot that another thread of the same CPU, or a
// thread that took the slot meanwhile, is using: what tcmalloc's per-CPU caches do. A thread
// of another CPU that must write this CPU's slot marks its key first and then restarts every
// running sequence with membarrier(2)'s RSEQ command (memcg/stock.hpp).
#pragma once

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
#define MEMCG_RSEQ_CPU_LOAD                 \
  "movslq %%fs:4(%[area]), %%rcx\n\t"       \
  "imulq %[stride], %%rcx, %%rcx\n\t"       \
  "addq %[slot0], %%rcx\n\t"                \
  "cmpq %[want], (%%rcx)\n\t"               \
  "jne %l[miss]\n\t"                        \
  "movq %c[nr](%%rcx), %%rax\n\t"
#define MEMCG_RSEQ_CPU_COMMIT      \
  "movq %%rax, %c[nr](%%rcx)\n"    \
  "2:\n"
#define MEMCG_RSEQ_CPU_INPUTS                                                            \
  [area] "r"(__rseq_offset), [slot0] "r"(slot0), [want] "r"(want), [n] "r"(n),           \
      [stride] "i"(Stride), [nr] "i"(NrOff)

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

// ---- The slab's per-CPU object caches ----
// CPU c's cache of one kmem_cache is at oc0 + c * oc_stride: 128 bytes apart, not 64, because
// x86's adjacent-line prefetch pairs 64-byte lines, and two CPUs' caches in one pair slowed
// both (slab_bench with 2 threads). It holds its key (the id of the kmem_cache_node whose
// objects it holds: the cache and the obj_cgroup they are charged to) and its list word: the
// offset of the first free object from `base` shifted left by oc_count_bits, and below it the
// number of objects. Each object's first word holds the list word of the objects under it. CPU c's stock's byte key is
// at busy0 + c * BusyStride; an object cache is used only while that key has none of the bits
// of `busy` (the stock is held: by a drainer, which then owns the CPU's object caches).
inline constexpr int oc_count_bits = 24;
inline constexpr std::uint64_t oc_count_mask = (std::uint64_t{1} << oc_count_bits) - 1;
inline constexpr std::size_t oc_stride = 128;

// Inside the sequence: a miss if this CPU's stock is held; rdx = this CPU's cache.
#define MEMCG_RSEQ_OC_SLOT                                   \
  "movslq %%fs:4(%[area]), %%rcx\n\t"                        \
  "movq %%rcx, %%rdx\n\t"                                    \
  "imulq %[bstride], %%rcx, %%rcx\n\t"                       \
  "addq %[busy0], %%rcx\n\t"                                 \
  "testq %[busy], (%%rcx)\n\t"                               \
  "jnz %l[miss]\n\t"                                         \
  "shlq $7, %%rdx\n\t"                                       \
  "addq %[oc0], %%rdx\n\t"
// ... and a miss unless its key is want.
#define MEMCG_RSEQ_OC_LOAD                                   \
  MEMCG_RSEQ_OC_SLOT                                         \
  "cmpq %[want], (%%rdx)\n\t"                                \
  "jne %l[miss]\n\t"
#define MEMCG_RSEQ_OC_INPUTS                                                              \
  [area] "r"(__rseq_offset), [busy0] "r"(busy0), [oc0] "r"(oc0), [want] "r"(want),        \
      [busy] "i"(Busy), [bstride] "i"(BusyStride)

// The first object of this CPU's cache into *out (false: a miss, *out untouched). A bool, not
// a null pointer, so that the caller's branch is the sequence's own (no test of the result).
template <std::size_t BusyStride, std::uintptr_t Busy>
MEMCG_ALWAYS_INLINE bool rseq_oc_pop(const void* busy0, void* oc0, std::uintptr_t want,
                                     char* base, void** out) noexcept {
  static_assert(oc_stride == 128);
  std::uint64_t w;
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_OC_LOAD
               "movq 8(%%rdx), %%rax\n\t"
               "testq %[cmask], %%rax\n\t"
               "jz %l[miss]\n\t"
               "movq %%rax, %%rcx\n\t"
               "shrq %[cbits], %%rcx\n\t"
               "movq (%[base], %%rcx, 1), %%rcx\n\t"
               "movq %%rcx, 8(%%rdx)\n"
               "2:\n\t"
               "movq %%rax, %[w]\n\t"
               : [w] "=r"(w)
               : MEMCG_RSEQ_OC_INPUTS, [base] "r"(base), [cmask] "i"(oc_count_mask),
                 [cbits] "i"(oc_count_bits)
               : "rax", "rcx", "rdx", "memory", "cc"
               : miss);
  *out = base + (w >> oc_count_bits);
  return true;
miss:
  return false;
}

// Pushes p (at offset `off` from base) onto this CPU's cache.
template <std::size_t BusyStride, std::uintptr_t Busy>
MEMCG_ALWAYS_INLINE bool rseq_oc_push(const void* busy0, void* oc0, std::uintptr_t want, void* p,
                                      std::uint64_t off, std::uint64_t cap) noexcept {
  const std::uint64_t head = off << oc_count_bits;
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_OC_LOAD
               "movq 8(%%rdx), %%rax\n\t"
               "movq %%rax, %%rcx\n\t"
               "andq %[cmask], %%rcx\n\t"
               "cmpq %[cap], %%rcx\n\t"
               "jae %l[miss]\n\t"
               "movq %%rax, (%[p])\n\t"  // the link: p is ours until the commit
               "addq $1, %%rcx\n\t"
               "orq %[head], %%rcx\n\t"
               "movq %%rcx, 8(%%rdx)\n"
               "2:\n\t"
               :
               : MEMCG_RSEQ_OC_INPUTS, [p] "r"(p), [cap] "r"(cap), [head] "r"(head),
                 [cmask] "i"(oc_count_mask)
               : "rax", "rcx", "rdx", "memory", "cc"
               : miss);
  return true;
miss:
  return false;
}

// Takes this CPU's whole cache, if its key is want and it holds an object: returns the list
// word it had (its first object's offset and the count; 0: a miss). The key stays.
template <std::size_t BusyStride, std::uintptr_t Busy>
MEMCG_ALWAYS_INLINE std::uint64_t rseq_oc_take_all(const void* busy0, void* oc0,
                                                   std::uintptr_t want) noexcept {
  static_assert(oc_stride == 128);
  std::uint64_t w;
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_OC_LOAD
               "movq 8(%%rdx), %%rax\n\t"
               "testq %[cmask], %%rax\n\t"
               "jz %l[miss]\n\t"
               "movq $0, 8(%%rdx)\n"
               "2:\n\t"
               "movq %%rax, %[w]\n\t"
               : [w] "=r"(w)
               : MEMCG_RSEQ_OC_INPUTS, [cmask] "i"(oc_count_mask)
               : "rax", "rcx", "rdx", "memory", "cc"
               : miss);
  return w;
miss:
  return 0;
}

// Makes this CPU's cache want's, if it holds no object.
template <std::size_t BusyStride, std::uintptr_t Busy>
MEMCG_ALWAYS_INLINE bool rseq_oc_claim(const void* busy0, void* oc0, std::uintptr_t want) noexcept {
  __asm__ goto(MEMCG_RSEQ_ENTER MEMCG_RSEQ_OC_SLOT
               "testq %[cmask], 8(%%rdx)\n\t"
               "jnz %l[miss]\n\t"
               "movq %[want], (%%rdx)\n"
               "2:\n\t"
               :
               : MEMCG_RSEQ_OC_INPUTS, [cmask] "i"(oc_count_mask)
               : "rax", "rcx", "rdx", "memory", "cc"
               : miss);
  return true;
miss:
  return false;
}

#undef MEMCG_RSEQ_OC_LOAD
#undef MEMCG_RSEQ_OC_SLOT
#undef MEMCG_RSEQ_OC_INPUTS
#undef MEMCG_RSEQ_ENTER
#undef MEMCG_RSEQ_CPU_LOAD
#undef MEMCG_RSEQ_CPU_COMMIT
#undef MEMCG_RSEQ_CPU_INPUTS

#else

inline bool rseq_registered() noexcept { return false; }
inline int rseq_cpu_id() noexcept { return 0; }
inline constexpr int oc_count_bits = 24;
inline constexpr std::uint64_t oc_count_mask = (std::uint64_t{1} << oc_count_bits) - 1;
inline constexpr std::size_t oc_stride = 128;
// No object caches without restartable sequences.
template <std::size_t BusyStride, std::uintptr_t Busy>
inline bool rseq_oc_pop(const void*, void*, std::uintptr_t, char*, void**) noexcept {
  return false;
}
template <std::size_t BusyStride, std::uintptr_t Busy>
inline bool rseq_oc_push(const void*, void*, std::uintptr_t, void*, std::uint64_t,
                         std::uint64_t) noexcept {
  return false;
}
template <std::size_t BusyStride, std::uintptr_t Busy>
inline bool rseq_oc_claim(const void*, void*, std::uintptr_t) noexcept {
  return false;
}
template <std::size_t BusyStride, std::uintptr_t Busy>
inline std::uint64_t rseq_oc_take_all(const void*, void*, std::uintptr_t) noexcept {
  return 0;
}

#endif

}  // namespace memcg::detail
