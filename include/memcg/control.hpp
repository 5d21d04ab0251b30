// memcg/control.hpp: the control files of a group, read and written by their cgroupfs names.
//
// Contents:
//   parse_bytes()     "64M", "4096", "max", "-1" -> bytes
//   parse_limit_pages()  the same as a limit in pages (rounded down, as page_counter_memparse)
//   control_value     what a read returns: one value, or keyed lines
//   read_control()    `cat GROUP/FILE`
//   write_control()   `echo VALUE > GROUP/FILE`, with the write semantics of docs/model.md,
//                     "Limit writes"
//   control_file_table  every file this library serves: name, v1/v2, read, write (the kernel's
//                     cftype arrays); find_control_file() looks a name up
//   control_files()   the names alone
// memory.kmem.slabinfo prints the slab's rows (memcg/slab.hpp) when the slab is linked in, the
// header alone otherwise (detail/slabinfo.hpp).
//
// Values are bytes; limits read back as "max" when unlimited. Errors are std::errc: EINVAL for
// an unknown file or a value it does not accept (nothing changes), EBUSY for a v1 limit below
// usage.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "memcg/detail/slabinfo.hpp"
#include "memcg/hierarchy.hpp"

namespace memcg {

struct size_syntax {
  bool allow_max = false;     // "max" means unlimited
  bool allow_minus1 = false;  // v1: "-1" means unlimited
};

// Parses a byte size: digits with an optional K/M/G/T suffix (powers of 1024, any case), or the
// unlimited spellings `syntax` allows. Returns bytes, or nullopt (malformed, negative, fraction,
// or above 2^63-1). Unlimited is returned as INT64_MAX.
inline std::optional<std::int64_t> parse_bytes(std::string_view s, size_syntax syntax = {}) noexcept {
  if (syntax.allow_max && s == "max") return INT64_MAX;
  if (syntax.allow_minus1 && s == "-1") return INT64_MAX;
  if (s.empty()) return std::nullopt;
  int shift = 0;
  switch (s.back()) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: break;
  }
  if (shift) s.remove_suffix(1);
  if (s.empty()) return std::nullopt;
  for (char c : s)
    if (c < '0' || c > '9') return std::nullopt;
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
  if (v > (static_cast<std::uint64_t>(INT64_MAX) >> shift)) return std::nullopt;
  return static_cast<std::int64_t>(v << shift);
}

// A limit in pages: bytes rounded down, unlimited as page_counter_max.
inline std::optional<std::int64_t> parse_limit_pages(std::string_view s, size_syntax syntax) noexcept {
  auto b = parse_bytes(s, syntax);
  if (!b) return std::nullopt;
  if (*b == INT64_MAX) return page_counter_max;
  std::int64_t p = bytes_to_pages_down(*b);
  return p > page_counter_max ? page_counter_max : p;
}

struct control_value {
  std::errc error{};
  bool keyed = false;
  std::vector<std::pair<std::string, std::string>> entries;  // key "" for a one-value file
  explicit operator bool() const noexcept { return error == std::errc{}; }
};

namespace detail {
inline std::string bytes_str(std::int64_t pages) { return std::to_string(pages * page_size); }
inline std::string limit_str(std::int64_t pages) {
  return pages >= page_counter_max ? std::string("max") : bytes_str(pages);
}
inline control_value one(std::string v) {
  control_value r;
  r.entries.emplace_back("", std::move(v));
  return r;
}
}  // namespace detail

// Which interface a file belongs to: cgroup v2 (the kernel's memory_files[]), v1
// (mem_cgroup_legacy_files[]), or both.
enum class cgroup_version : std::uint8_t { v1, v2, both };

// What read_control() and write_control() dispatch on: one value per file.
enum class control_id : std::uint8_t {
  current, min, low, high, max, peak, events, events_local, stat, stat_local, pressure_level,
  pressure, limit_in_bytes, usage_in_bytes, max_usage_in_bytes, failcnt, soft_limit_in_bytes,
  kmem_limit_in_bytes, kmem_usage_in_bytes, kmem_max_usage_in_bytes, kmem_failcnt,
  kmem_soft_limit_in_bytes, tcp_limit_in_bytes, tcp_usage_in_bytes, tcp_max_usage_in_bytes,
  tcp_failcnt, kmem_slabinfo
};

// One control file, as a cftype entry: its name, interface, and whether it reads and writes.
struct control_file {
  std::string_view name;
  control_id id;
  cgroup_version version;
  bool read;
  bool write;
};

// Every file this library serves: the one list read_control(), write_control(),
// control_files() and memcg-sim consult.
inline constexpr std::array<control_file, 27> control_file_table = {{
    {"memory.current", control_id::current, cgroup_version::v2, true, false},
    {"memory.min", control_id::min, cgroup_version::v2, true, true},
    {"memory.low", control_id::low, cgroup_version::v2, true, true},
    {"memory.high", control_id::high, cgroup_version::v2, true, true},
    {"memory.max", control_id::max, cgroup_version::v2, true, true},
    {"memory.peak", control_id::peak, cgroup_version::v2, true, true},
    {"memory.events", control_id::events, cgroup_version::v2, true, false},
    {"memory.events.local", control_id::events_local, cgroup_version::v2, true, false},
    {"memory.stat", control_id::stat, cgroup_version::both, true, false},
    {"memory.stat.local", control_id::stat_local, cgroup_version::v2, true, false},
    {"memory.pressure_level", control_id::pressure_level, cgroup_version::v1, true, false},
    {"memory.pressure", control_id::pressure, cgroup_version::v2, true, false},
    {"memory.limit_in_bytes", control_id::limit_in_bytes, cgroup_version::v1, true, true},
    {"memory.usage_in_bytes", control_id::usage_in_bytes, cgroup_version::v1, true, false},
    {"memory.max_usage_in_bytes", control_id::max_usage_in_bytes, cgroup_version::v1, true, true},
    {"memory.failcnt", control_id::failcnt, cgroup_version::v1, true, true},
    {"memory.soft_limit_in_bytes", control_id::soft_limit_in_bytes, cgroup_version::v1, true, true},
    {"memory.kmem.limit_in_bytes", control_id::kmem_limit_in_bytes, cgroup_version::v1, true,
     true},
    {"memory.kmem.usage_in_bytes", control_id::kmem_usage_in_bytes, cgroup_version::v1, true,
     false},
    {"memory.kmem.max_usage_in_bytes", control_id::kmem_max_usage_in_bytes, cgroup_version::v1,
     true, true},
    {"memory.kmem.failcnt", control_id::kmem_failcnt, cgroup_version::v1, true, true},
    {"memory.kmem.soft_limit_in_bytes", control_id::kmem_soft_limit_in_bytes, cgroup_version::v1,
     true, true},
    {"memory.kmem.tcp.limit_in_bytes", control_id::tcp_limit_in_bytes, cgroup_version::v1, true,
     true},
    {"memory.kmem.tcp.usage_in_bytes", control_id::tcp_usage_in_bytes, cgroup_version::v1, true,
     false},
    {"memory.kmem.tcp.max_usage_in_bytes", control_id::tcp_max_usage_in_bytes, cgroup_version::v1,
     true, true},
    {"memory.kmem.tcp.failcnt", control_id::tcp_failcnt, cgroup_version::v1, true, true},
    {"memory.kmem.slabinfo", control_id::kmem_slabinfo, cgroup_version::v1, true, false},
}};

// The table's entry for `name`, or nullptr for a file this library does not serve.
constexpr const control_file* find_control_file(std::string_view name) noexcept {
  for (const control_file& f : control_file_table)
    if (f.name == name) return &f;
  return nullptr;
}

// One entry per name.
static_assert([] {
  for (std::size_t i = 0; i < control_file_table.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (control_file_table[i].name == control_file_table[j].name) return false;
  return true;
}());

inline const std::vector<std::string_view>& control_files() {
  static const std::vector<std::string_view> files = [] {
    std::vector<std::string_view> v;
    for (const control_file& f : control_file_table) v.push_back(f.name);
    return v;
  }();
  return files;
}

// memory.stat keys, in print order, with the kinds each sums.
inline constexpr std::array<std::string_view, 9> stat_keys = {
    "anon", "file", "kernel", "kmem", "pagetables", "slab_reclaimable", "slab_unreclaimable",
    "slab", "sock"};

template <sync_policy Sync>
control_value read_control(basic_hierarchy<Sync>& h, basic_group<Sync>& g, std::string_view file) {
  using detail::bytes_str;
  using detail::limit_str;
  using detail::one;
  const control_file* f = find_control_file(file);
  if (!f || !f->read) {
    control_value r;
    r.error = std::errc::invalid_argument;
    return r;
  }
  auto& m = g.memory;
  switch (f->id) {
    case control_id::current:
    case control_id::usage_in_bytes: return one(bytes_str(m.usage()));
    case control_id::min: return one(limit_str(m.min()));
    case control_id::low: return one(limit_str(m.low()));
    case control_id::high: return one(limit_str(m.high()));
    case control_id::max:
    case control_id::limit_in_bytes: return one(limit_str(m.max()));
    case control_id::soft_limit_in_bytes: return one(limit_str(m.soft_limit()));
    case control_id::peak: {
      std::int64_t fd = g.peak_file_value();
      std::int64_t v = fd < 0 ? m.watermark() : std::max(fd, m.local_watermark());
      return one(bytes_str(v));
    }
    case control_id::max_usage_in_bytes: return one(bytes_str(m.watermark()));
    case control_id::failcnt: return one(std::to_string(m.failcnt()));
    case control_id::kmem_limit_in_bytes: return one(limit_str(g.kmem.max()));
    case control_id::kmem_usage_in_bytes: return one(bytes_str(g.kmem.usage()));
    case control_id::kmem_max_usage_in_bytes: return one(bytes_str(g.kmem.watermark()));
    case control_id::kmem_failcnt: return one(std::to_string(g.kmem.failcnt()));
    case control_id::kmem_soft_limit_in_bytes: return one(limit_str(g.kmem_soft_limit()));
    case control_id::tcp_limit_in_bytes: return one(limit_str(g.tcp.max()));
    case control_id::tcp_usage_in_bytes: return one(bytes_str(g.tcp.usage()));
    case control_id::tcp_max_usage_in_bytes: return one(bytes_str(g.tcp.watermark()));
    case control_id::tcp_failcnt: return one(std::to_string(g.tcp.failcnt()));
    case control_id::kmem_slabinfo: {
      // The slab's rows when memcg/slab.hpp is linked in (it serves sync::atomic groups only);
      // the header alone otherwise.
      std::vector<detail::slabinfo_row> rows;
      if constexpr (std::is_same_v<Sync, sync::atomic>)
        // acquire: pairs with kmem_cache's release (the function is code: nothing else to see).
        if (auto fn = detail::slabinfo_source.load(std::memory_order_acquire)) rows = fn(&g);
      control_value r;
      for (std::string& line : detail::slabinfo_lines(rows)) r.entries.emplace_back("", std::move(line));
      return r;
    }
    case control_id::events:
    case control_id::events_local: {
      bool local = f->id == control_id::events_local;
      control_value r;
      r.keyed = true;
      for (int i = 0; i < nr_events; ++i) {
        event e = static_cast<event>(i);
        r.entries.emplace_back(std::string(event_name(e)),
                               std::to_string(local ? g.events_local(e) : g.events(e)));
      }
      return r;
    }
    case control_id::stat:
    case control_id::stat_local: {
      bool local = f->id == control_id::stat_local;
      std::array<std::int64_t, nr_kinds> v{};
      for (kind k : all_kinds)
        v[static_cast<int>(k)] = local ? h.stat_local(g, k) : h.stat(g, k);
      auto at = [&](kind k) { return v[static_cast<int>(k)]; };
      std::int64_t slab = at(kind::slab_reclaimable) + at(kind::slab_unreclaimable);
      control_value r;
      r.keyed = true;
      r.entries = {{"anon", bytes_str(at(kind::anon))},
                   {"file", bytes_str(at(kind::file))},
                   {"kernel", bytes_str(at(kind::kmem) + at(kind::pagetables) + slab)},
                   {"kmem", bytes_str(at(kind::kmem))},
                   {"pagetables", bytes_str(at(kind::pagetables))},
                   {"slab_reclaimable", bytes_str(at(kind::slab_reclaimable))},
                   {"slab_unreclaimable", bytes_str(at(kind::slab_unreclaimable))},
                   {"slab", bytes_str(slab)},
                   {"sock", bytes_str(at(kind::sock))}};
      return r;
    }
    case control_id::pressure_level:
      return one(std::string(pressure_level_name(h.pressure().level(g))));
    case control_id::pressure: {
      // docs/scenarios.md: the `some` line of PSI as keys (memcg/pressure.hpp).
      psi_snapshot p = h.pressure().psi(g);
      control_value r;
      r.keyed = true;
      r.entries = {{"some_avg10", psi_avg_string(p.avg[0])},
                   {"some_avg60", psi_avg_string(p.avg[1])},
                   {"some_avg300", psi_avg_string(p.avg[2])},
                   {"some_total", std::to_string(p.total_us)}};
      return r;
    }
  }
  control_value r;  // not reached: the switch names every control_id
  r.error = std::errc::invalid_argument;
  return r;
}

// Writes a control file. Requires: value is one token (the caller splits a command line).
template <sync_policy Sync>
std::errc write_control(basic_hierarchy<Sync>& h, basic_group<Sync>& g, std::string_view file,
                        std::string_view value) {
  // Unknown files and read-only files alike refuse.
  const control_file* f = find_control_file(file);
  if (!f || !f->write) return std::errc::invalid_argument;
  const size_syntax v2{.allow_max = true, .allow_minus1 = false};
  // v1 files take "-1" for unlimited and refuse "max" with EINVAL, as Linux 6.18 does
  // (page_counter_memparse with "-1"; measured by conformance/).
  const size_syntax v1{.allow_max = false, .allow_minus1 = true};
  std::optional<std::int64_t> p = parse_limit_pages(value, f->version == cgroup_version::v1 ? v1 : v2);
  // v1 resets: any value resets (mem_cgroup_reset() ignores it; docs/model.md, "Limit writes").
  auto reset_failcnt = [](basic_counter<Sync>& c) {
    c.reset_failcnt();
    return std::errc{};
  };
  auto reset_watermark = [](basic_counter<Sync>& c) {
    c.reset_watermark();
    return std::errc{};
  };
  switch (f->id) {
    case control_id::max: return p ? h.write_max(g, *p) : std::errc::invalid_argument;
    case control_id::high: return p ? h.write_high(g, *p) : std::errc::invalid_argument;
    case control_id::min: return p ? h.write_min(g, *p) : std::errc::invalid_argument;
    case control_id::low: return p ? h.write_low(g, *p) : std::errc::invalid_argument;
    case control_id::limit_in_bytes:
      return p ? h.write_limit_in_bytes(g, *p) : std::errc::invalid_argument;
    case control_id::soft_limit_in_bytes:
      return p ? h.write_soft_limit(g, *p) : std::errc::invalid_argument;
    case control_id::kmem_limit_in_bytes:
      return p ? h.write_kmem_limit(g, *p) : std::errc::invalid_argument;
    case control_id::kmem_soft_limit_in_bytes:
      return p ? h.write_kmem_soft_limit(g, *p) : std::errc::invalid_argument;
    case control_id::tcp_limit_in_bytes:
      return p ? h.write_tcp_limit(g, *p) : std::errc::invalid_argument;
    case control_id::peak:
      if (value.empty()) return std::errc::invalid_argument;
      g.memory.reset_local_watermark();
      g.set_peak_file_value(g.memory.usage());
      return {};
    case control_id::max_usage_in_bytes: return reset_watermark(g.memory);
    case control_id::failcnt: return reset_failcnt(g.memory);
    case control_id::kmem_max_usage_in_bytes: return reset_watermark(g.kmem);
    case control_id::kmem_failcnt: return reset_failcnt(g.kmem);
    case control_id::tcp_max_usage_in_bytes: return reset_watermark(g.tcp);
    case control_id::tcp_failcnt: return reset_failcnt(g.tcp);
    default: break;  // the read-only files; the table's `write` column refused them above
  }
  return std::errc::invalid_argument;
}

}  // namespace memcg
