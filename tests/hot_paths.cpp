// Instantiates the hot paths of every sync policy so that tests/check_headers.sh compiles them
// with -fno-exceptions -fno-rtti -Werror (and clang's -Wthread-safety): header-only templates
// are only checked when instantiated. Not linked into any test binary.
#include <memcg/memcg.hpp>

template <class S>
int exercise() {
  memcg::basic_counter<S> parent, child(&parent, true);
  memcg::basic_counter<S>* fail = nullptr;
  int r = child.try_charge(1, &fail) == std::errc{} ? 0 : 1;
  (void)child.uncharge(1);
  { auto g = memcg::try_charge(child, 1); r += g ? 0 : 1; }
  memcg::basic_hierarchy<S> h;
  auto a = h.mkdir("a");
  auto s = h.try_charge(*a.g, memcg::kind::anon, 1);
  h.uncharge_unchecked(*a.g, memcg::kind::anon, 1);
  { auto g = h.charge(*a.g, memcg::kind::kmem, 1); }
  (void)h.handle_over_high();
  (void)h.throttle_point();
  (void)memcg::under_socket_pressure(h, *a.g);
  (void)memcg::read_control(h, *a.g, "memory.stat");
  (void)memcg::write_control(h, *a.g, "memory.max", "1M");
  return r + (s ? 0 : 1);
}

int main() {
  return exercise<memcg::sync::single_thread>() + exercise<memcg::sync::atomic>() +
         exercise<memcg::sync::spinlocked>() + exercise<memcg::sync::null>();
}
