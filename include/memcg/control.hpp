// memcg/control.hpp: the control files of a group, read and written by their cgroupfs names.
//
// Contents:
//   parse_bytes()     "64M", "4096", "max", "-1" -> bytes
//   parse_limit_pages()  the same as a limit in pages (rounded down, as page_counter_memparse)
//   control_value     what a read returns: one value, or keyed lines
//   read_control()    `cat GROUP/FILE`
//   write_control()   `echo VALUE > GROUP/FILE`, with the write semantics of docs/model.md,
//                     "Limit writes"
//   control_files()   every file name this library serves
//
// Values are bytes; limits read back as "max" when unlimited. Errors are std::errc: EINVAL for
// an unknown file or a value it does not accept (nothing changes), EBUSY for a v1 limit below
// usage.
#pragma once

#include <array>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

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

inline const std::vector<std::string_view>& control_files() {
  static const std::vector<std::string_view> files = {
      "memory.current", "memory.min", "memory.low", "memory.high", "memory.max", "memory.peak",
      "memory.events", "memory.events.local", "memory.stat", "memory.stat.local",
      "memory.pressure_level", "memory.pressure", "memory.limit_in_bytes",
      "memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.failcnt",
      "memory.soft_limit_in_bytes", "memory.kmem.limit_in_bytes", "memory.kmem.usage_in_bytes",
      "memory.kmem.max_usage_in_bytes", "memory.kmem.failcnt", "memory.kmem.soft_limit_in_bytes",
      "memory.kmem.tcp.limit_in_bytes", "memory.kmem.tcp.usage_in_bytes",
      "memory.kmem.tcp.max_usage_in_bytes", "memory.kmem.tcp.failcnt"};
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
  auto& m = g.memory;
  if (file == "memory.current" || file == "memory.usage_in_bytes") return one(bytes_str(m.usage()));
  if (file == "memory.min") return one(limit_str(m.min()));
  if (file == "memory.low") return one(limit_str(m.low()));
  if (file == "memory.high") return one(limit_str(m.high()));
  if (file == "memory.max" || file == "memory.limit_in_bytes") return one(limit_str(m.max()));
  if (file == "memory.soft_limit_in_bytes") return one(limit_str(m.soft_limit()));
  if (file == "memory.peak") {
    std::int64_t fd = g.peak_file_value();
    std::int64_t v = fd < 0 ? m.watermark() : std::max(fd, m.local_watermark());
    return one(bytes_str(v));
  }
  if (file == "memory.max_usage_in_bytes") return one(bytes_str(m.watermark()));
  if (file == "memory.failcnt") return one(std::to_string(m.failcnt()));
  if (file == "memory.kmem.limit_in_bytes") return one(limit_str(g.kmem.max()));
  if (file == "memory.kmem.usage_in_bytes") return one(bytes_str(g.kmem.usage()));
  if (file == "memory.kmem.max_usage_in_bytes") return one(bytes_str(g.kmem.watermark()));
  if (file == "memory.kmem.failcnt") return one(std::to_string(g.kmem.failcnt()));
  if (file == "memory.kmem.soft_limit_in_bytes") return one(limit_str(g.kmem_soft_limit()));
  if (file == "memory.kmem.tcp.limit_in_bytes") return one(limit_str(g.tcp.max()));
  if (file == "memory.kmem.tcp.usage_in_bytes") return one(bytes_str(g.tcp.usage()));
  if (file == "memory.kmem.tcp.max_usage_in_bytes") return one(bytes_str(g.tcp.watermark()));
  if (file == "memory.kmem.tcp.failcnt") return one(std::to_string(g.tcp.failcnt()));
  if (file == "memory.events" || file == "memory.events.local") {
    bool local = file == "memory.events.local";
    control_value r;
    r.keyed = true;
    for (int i = 0; i < nr_events; ++i) {
      event e = static_cast<event>(i);
      r.entries.emplace_back(std::string(event_name(e)),
                             std::to_string(local ? g.events_local(e) : g.events(e)));
    }
    return r;
  }
  if (file == "memory.stat" || file == "memory.stat.local") {
    bool local = file == "memory.stat.local";
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
  if (file == "memory.pressure_level")
    return one(std::string(pressure_level_name(h.pressure().level(g))));
  if (file == "memory.pressure") {
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
  control_value r;
  r.error = std::errc::invalid_argument;
  return r;
}

// Writes a control file. Requires: value is one token (the caller splits a command line).
template <sync_policy Sync>
std::errc write_control(basic_hierarchy<Sync>& h, basic_group<Sync>& g, std::string_view file,
                        std::string_view value) {
  const size_syntax v2{.allow_max = true, .allow_minus1 = false};
  // v1 files take "-1" for unlimited and refuse "max" with EINVAL, as Linux 6.18 does
  // (page_counter_memparse with "-1"; measured by conformance/).
  const size_syntax v1{.allow_max = false, .allow_minus1 = true};
  auto limit = [&](size_syntax syn) { return parse_limit_pages(value, syn); };
  std::optional<std::int64_t> p;
  if (file == "memory.max") {
    if (!(p = limit(v2))) return std::errc::invalid_argument;
    return h.write_max(g, *p);
  }
  if (file == "memory.high") {
    if (!(p = limit(v2))) return std::errc::invalid_argument;
    return h.write_high(g, *p);
  }
  if (file == "memory.min") {
    if (!(p = limit(v2))) return std::errc::invalid_argument;
    return h.write_min(g, *p);
  }
  if (file == "memory.low") {
    if (!(p = limit(v2))) return std::errc::invalid_argument;
    return h.write_low(g, *p);
  }
  if (file == "memory.peak") {
    if (value.empty()) return std::errc::invalid_argument;
    g.memory.reset_local_watermark();
    g.set_peak_file_value(g.memory.usage());
    return {};
  }
  if (file == "memory.limit_in_bytes") {
    if (!(p = limit(v1))) return std::errc::invalid_argument;
    return h.write_limit_in_bytes(g, *p);
  }
  if (file == "memory.soft_limit_in_bytes") {
    if (!(p = limit(v1))) return std::errc::invalid_argument;
    return h.write_soft_limit(g, *p);
  }
  if (file == "memory.kmem.limit_in_bytes") {
    if (!(p = limit(v1))) return std::errc::invalid_argument;
    return h.write_kmem_limit(g, *p);
  }
  if (file == "memory.kmem.soft_limit_in_bytes") {
    if (!(p = limit(v1))) return std::errc::invalid_argument;
    return h.write_kmem_soft_limit(g, *p);
  }
  if (file == "memory.kmem.tcp.limit_in_bytes") {
    if (!(p = limit(v1))) return std::errc::invalid_argument;
    return h.write_tcp_limit(g, *p);
  }
  // v1 resets: any value resets (mem_cgroup_reset() ignores it; docs/model.md, "Limit writes").
  basic_counter<Sync>* c = nullptr;
  bool failcnt = false;
  if (file == "memory.max_usage_in_bytes") c = &g.memory;
  else if (file == "memory.failcnt") c = &g.memory, failcnt = true;
  else if (file == "memory.kmem.max_usage_in_bytes") c = &g.kmem;
  else if (file == "memory.kmem.failcnt") c = &g.kmem, failcnt = true;
  else if (file == "memory.kmem.tcp.max_usage_in_bytes") c = &g.tcp;
  else if (file == "memory.kmem.tcp.failcnt") c = &g.tcp, failcnt = true;
  if (c) {
    if (failcnt) c->reset_failcnt();
    else c->reset_watermark();
    return {};
  }
  // Known read-only files and unknown files alike refuse.
  return std::errc::invalid_argument;
}

}  // namespace memcg
