// tests/support.hpp: the few helpers every test of the group layer uses.
#pragma once

#include <doctest/doctest.h>

#include "memcg/hierarchy.hpp"

namespace memcg_test {

template <class P>
using hier = memcg::basic_hierarchy<P>;
template <class P>
using grp = memcg::basic_group<P>;

// mkdir that must succeed.
template <class P>
grp<P>& make(hier<P>& h, const char* path) {
  auto r = h.mkdir(path);
  REQUIRE(r);
  return *r.g;
}

}  // namespace memcg_test
