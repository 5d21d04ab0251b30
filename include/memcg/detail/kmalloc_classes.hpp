// memcg/detail/kmalloc_classes.hpp: kmalloc's size classes and the objects too large for a
// slab page. Not API.
//
// Contents:
//   kmalloc_class_size[], kmalloc_index()   the classes 8 B .. 8 KiB (the kernel's
//                          kmalloc_caches: powers of two and 96, 192) and the class of a size
//   large_header           the record before a large object: its node, its size, its block
//   large_alloc/free/find  large objects: mimalloc blocks (the system allocator in sanitizer
//                          builds, so that the sanitizer sees them), each with its record
//   slab_backend           what the preload shim asks: does an address belong to us
//
// This is the only header that includes <mimalloc.h>. Linking memcg::slab links
// libmimalloc.so, which replaces malloc/free/new/delete for the whole process.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "memcg/config.hpp"
#include "memcg/detail/slab_page.hpp"

#if defined(MEMCG_SANITIZER_BUILD) || defined(MEMCG_SANITIZER_DETECTED)
#define MEMCG_SLAB_SYSTEM_ALLOCATOR 1
#include <malloc.h>
#else
#include <mimalloc.h>
#endif

namespace memcg::detail {

inline constexpr int kmalloc_nr_classes = 13;
inline constexpr std::array<std::uint32_t, kmalloc_nr_classes> kmalloc_class_size = {
    8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192};
inline constexpr std::size_t kmalloc_max_size = 8192;
static_assert(kmalloc_max_size == slab_max_stride);

// The kernel's size_index[]: sizes up to 192 by 8-byte steps.
inline constexpr std::array<std::uint8_t, 24> kmalloc_small_index = {
    0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6};

// The class of size bytes aligned to align (a power of two), or kmalloc_nr_classes when no class
// holds it (a large object). A class's objects are aligned to the largest power of two that
// divides its size (96: 32, 192: 64).
MEMCG_ALWAYS_INLINE int kmalloc_index(std::size_t size, std::size_t align = 0) noexcept {
  if (MEMCG_UNLIKELY(size == 0 || size > kmalloc_max_size)) return kmalloc_nr_classes;
  int i = size <= 192 ? kmalloc_small_index[(size - 1) >> 3]
                      : static_cast<int>(std::bit_width(size - 1)) - 1;
  if (MEMCG_UNLIKELY(align > 8))
    while (i < kmalloc_nr_classes && kmalloc_class_size[static_cast<std::size_t>(i)] % align) ++i;
  return i;
}
static_assert(kmalloc_class_size[static_cast<std::size_t>(13 - 1)] == 8192);

// ---- large objects ----

struct large_header {
  std::uintptr_t check;  // large_cookie ^ the object's address
  void* node;            // its kmem_cache_node (nullptr: kmem_cache::alloc_raw())
  std::uint64_t size;    // usable bytes from the object on (ksize)
  std::uint64_t offset;  // from the block's start to the object
};
static_assert(sizeof(large_header) == 32);
inline constexpr std::uintptr_t large_cookie = 0x6d656d63676c7267u;  // "memcglrg"

// A block of size bytes (plus the record) aligned to align; the record filled but for node.
// nullptr when the backing allocator refuses.
inline void* large_alloc(std::size_t size, std::size_t align, bool zero) noexcept {
  std::size_t off = align > sizeof(large_header) ? align : sizeof(large_header);
  if (size > (SIZE_MAX >> 2)) return nullptr;
  std::size_t want = size + off;
  void* b;
#if defined(MEMCG_SLAB_SYSTEM_ALLOCATOR)
  if (align <= alignof(std::max_align_t)) b = zero ? std::calloc(1, want) : std::malloc(want);
  else if (posix_memalign(&b, align, want) != 0) b = nullptr;
  if (!b) return nullptr;
  std::size_t usable = malloc_usable_size(b);
#else
  b = align <= alignof(std::max_align_t) ? (zero ? mi_zalloc(want) : mi_malloc(want))
                                         : (zero ? mi_zalloc_aligned(want, align)
                                                 : mi_malloc_aligned(want, align));
  if (!b) return nullptr;
  std::size_t usable = mi_usable_size(b);
#endif
  char* p = static_cast<char*>(b) + off;
  large_header h{large_cookie ^ reinterpret_cast<std::uintptr_t>(p), nullptr, usable - off, off};
  std::memcpy(p - sizeof h, &h, sizeof h);
  return p;
}
MEMCG_ALWAYS_INLINE large_header* large_record(void* p) noexcept {
  return reinterpret_cast<large_header*>(static_cast<char*>(p) - sizeof(large_header));
}
// What a large object is charged: its whole block.
MEMCG_ALWAYS_INLINE std::int64_t large_charge(const large_header* h) noexcept {
  return static_cast<std::int64_t>(h->size + h->offset);
}
// p is a live large object (debug checks). Its record is read only where the backing allocator
// owns p's memory.
inline bool large_is_live(void* p) noexcept {
#if defined(MEMCG_SLAB_SYSTEM_ALLOCATOR)
  (void)p;
  return true;  // the sanitizer checks the rest
#else
  if (!mi_is_in_heap_region(p)) return false;
  large_header h;
  std::memcpy(&h, large_record(p), sizeof h);
  return h.check == (large_cookie ^ reinterpret_cast<std::uintptr_t>(p));
#endif
}
inline void large_free(void* p) noexcept {
  large_header* h = large_record(p);
  void* b = static_cast<char*>(p) - h->offset;
  h->check = 0;  // a second free finds no record
#if defined(MEMCG_SLAB_SYSTEM_ALLOCATOR)
  std::free(b);
#else
  mi_free(b);
#endif
}

// ---- ownership (the preload shim) ----

struct slab_backend {
#if defined(MEMCG_SLAB_SYSTEM_ALLOCATOR)
  static constexpr bool is_mimalloc = false;
  static bool owns(const void*) noexcept { return true; }
#else
  static constexpr bool is_mimalloc = true;
  // A slab object or a large object (or a block mimalloc handed to somebody else).
  MEMCG_ALWAYS_INLINE static bool owns(const void* p) noexcept {
    return slab_pages().contains(p) || mi_is_in_heap_region(p);
  }
#endif
};

}  // namespace memcg::detail
