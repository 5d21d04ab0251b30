// memcg/detail/slabinfo.hpp: the v1 file memory.kmem.slabinfo, as the kernel prints
// /proc/slabinfo. Not API.
//
// Contents:
//   slabinfo_row         one cache's line: name, active_objs, num_objs, objsize, objperslab,
//                        pagesperslab, and the slabdata columns
//   slabinfo_lines()     the header and one line per row, in the kernel's format (version 2.1;
//                        the tunables, which SLUB does not have, print as 0)
//   slabinfo_source      the slab's rows of one group; set by memcg/slab.hpp when the slab is
//                        linked (control.hpp reads the file through it, and prints the header
//                        alone without it)
//
// For a group a row counts the objects charged to it (allocated in it, or in removed
// descendants whose handles now reach it); slab pages are shared between groups, so num_objs
// equals active_objs and the slabdata columns are the pages those objects would fill.
#pragma once

#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace memcg::detail {

struct slabinfo_row {
  std::string name;
  std::int64_t active_objs = 0;
  std::int64_t num_objs = 0;
  std::int64_t objsize = 0;
  std::int64_t objperslab = 0;
  std::int64_t pagesperslab = 0;
  std::int64_t active_slabs = 0;
  std::int64_t num_slabs = 0;
};

inline std::vector<std::string> slabinfo_lines(const std::vector<slabinfo_row>& rows) {
  std::vector<std::string> out;
  out.emplace_back("slabinfo - version: 2.1");
  out.emplace_back(
      "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : "
      "tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> "
      "<sharedavail>");
  char buf[256];
  for (const slabinfo_row& r : rows) {
    std::snprintf(buf, sizeof buf,
                  "%-17s %6" PRId64 " %6" PRId64 " %6" PRId64 " %4" PRId64 " %4" PRId64
                  " : tunables %4d %4d %4d : slabdata %6" PRId64 " %6" PRId64 " %6d",
                  r.name.c_str(), r.active_objs, r.num_objs, r.objsize, r.objperslab,
                  r.pagesperslab, 0, 0, 0, r.active_slabs, r.num_slabs, 0);
    out.emplace_back(buf);
  }
  return out;
}

// The rows of a group (its address), or of the whole process (nullptr).
using slabinfo_fn = std::vector<slabinfo_row> (*)(const void* group);
inline constinit std::atomic<slabinfo_fn> slabinfo_source{nullptr};

}  // namespace memcg::detail
