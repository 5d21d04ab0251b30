// Tests of memcg/stock.hpp under adversarial schedules: an owner stopped inside its
// stock while others drain and flush, a fork while owners are inside their stocks (with the
// program's fork handlers or none, and from a signal handler), a signal handler that charges
// while its thread is inside a slow path of its stock. The delay hook
// (MEMCG_DELAY in memcg/detail/fault.hpp) stops or stretches a thread at the busy sections.
//
// Built into memcg_proof_tests (MEMCG_FAULT_INJECTION).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <thread>
#include <vector>

#include "memcg/detail/fault.hpp"
#include "memcg/hierarchy.hpp"

#if !defined(MEMCG_FAULT_INJECTION)
#error "stock_proof_test.cpp is built with MEMCG_FAULT_INJECTION (memcg_proof_tests)"
#endif

#include "proof_support.hpp"
#include "support.hpp"

namespace {

using memcg::kind;
using memcg::detail::delay_site;
using memcg_test::hook_guard;
using memcg_test::make;
using memcg_test::wait_for;
using namespace std::chrono_literals;

constexpr std::errc ok{};

// The thread the hooks below act on.
thread_local bool tl_target = false;

// Concurrent: the `stress` ctest runs them, in the TSan preset too.
TEST_SUITE_BEGIN("concurrency");

// ---- an owner stopped inside its stock -------------------------------------------------------

std::atomic<bool> g_hold{false};
std::atomic<bool> g_inside{false};

// Stops the target thread at its first slow-path section while g_hold is set.
void hold_hook(delay_site site) noexcept {
  if (site != delay_site::stock_busy || !tl_target) return;
  // acquire/release: flags between the test's threads; the joins order the rest.
  if (!g_hold.load(std::memory_order_acquire)) return;
  g_inside.store(true, std::memory_order_release);
  while (g_hold.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
  g_inside.store(false, std::memory_order_release);
}

TEST_CASE("a drain does not wait for an owner stopped inside its stock; the owner gives back next") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  hook_guard hook(&hold_hook);
  auto& reg = memcg::detail::stock_registry<memcg::sync::atomic>::instance();
  std::atomic<bool> charged{false}, release_owner{false}, owner_done{false};
  std::thread owner([&] {
    // On one CPU: its batch and the stock it holds later are one stock. The suite runs
    // unpinned, and there the final count was flaky (65 pages in 2 runs of 30); migrations are
    // not what this test is about.
    memcg_test::cpu_pin pin(memcg_test::allowed_cpu(0));
    tl_target = true;
    REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);  // a batch: 63 pages parked
    charged.store(true, std::memory_order_release);
    wait_for(release_owner, 10s);
    // Another kind misses slot 0's key: the slow path, where the hook stops us.
    g_hold.store(true, std::memory_order_release);
    CHECK(h.try_charge(a, kind::file, 1).error == ok);
    owner_done.store(true, std::memory_order_release);
    wait_for(release_owner, 10s);  // stays alive: its stock stays registered
  });
  REQUIRE(wait_for(charged, 5s));
  if (!memcg::detail::memcg_stock<memcg::sync::atomic>::local()->usable()) {
    MESSAGE("the stock is off in this process (no rseq/membarrier): nothing to test");
    g_hold.store(false);
    release_owner.store(true);
    owner.join();
    return;
  }
  CHECK(a.memory.usage() == 64);
  release_owner.store(true, std::memory_order_release);
  REQUIRE(wait_for(g_inside, 5s));
  // The owner is inside its slow path now and stays there while g_hold is set.
  std::int64_t skipped_before = reg.skipped_owners();
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    h.drain_stocks(&a);           // a limit write's or a refused charge's drain
    reg.flush_stats();            // a flush of statistics (a read takes no stock at all)
    drained.store(true, std::memory_order_release);
  });
  bool in_time = wait_for(drained, 5s);
  CHECK_MESSAGE(in_time, "the drain waited for the stopped owner");
  CHECK(reg.skipped_owners() >= skipped_before + 1);
  CHECK(g_inside.load());  // the owner was still stopped during the whole drain
  g_hold.store(false, std::memory_order_release);
  drainer.join();
  REQUIRE(wait_for(owner_done, 5s));
  // The owner served the request when it left its slow path: its stock holds nothing now, so
  // memory.current is what is charged (2 pages), not a batch.
  CHECK(a.memory.usage() == 2);
  owner.join();
  h.uncharge_unchecked(a, kind::anon, 1);
  h.uncharge_unchecked(a, kind::file, 1);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
  CHECK(h.stat_local(a, kind::anon) == 0);
  CHECK(h.stat_local(a, kind::file) == 0);
}

TEST_CASE("a checked uncharge of pages a stopped owner's stock still counts waits for it, refuses nothing") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  hook_guard hook(&hold_hook);
  std::atomic<bool> charged{false}, go{false};
  std::thread owner([&] {
    tl_target = true;
    // 5 anon pages recorded in this thread's stock (the implicit delta), not in the group.
    for (int i = 0; i < 5; ++i) REQUIRE(h.try_charge(a, kind::anon, 1).error == ok);
    charged.store(true, std::memory_order_release);
    wait_for(go, 10s);
    g_hold.store(true, std::memory_order_release);
    CHECK(h.try_charge(a, kind::file, 1).error == ok);  // stopped inside the slow path
  });
  REQUIRE(wait_for(charged, 5s));
  go.store(true, std::memory_order_release);
  REQUIRE(wait_for(g_inside, 5s));
  // Release the owner a little later, from another thread: the exact flush waits until then.
  std::thread releaser([] {
    std::this_thread::sleep_for(50ms);
    g_hold.store(false, std::memory_order_release);
  });
  // The pages were charged by the owner and handed to us: the check must find them.
  CHECK(h.uncharge(a, kind::anon, 5) == ok);
  releaser.join();
  owner.join();
  h.uncharge_unchecked(a, kind::file, 1);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
  CHECK(h.stat_local(a, kind::anon) == 0);
}

// ---- fork while owners are inside their stocks -----------------------------------------------

std::atomic<int> g_stretch{0};
// Stretches the workers' slow-path sections, so that forks land inside them.
void stretch_hook(delay_site site) noexcept {
  if ((site != delay_site::stock_busy && site != delay_site::stock_slot_half) || !tl_target) return;
  // relaxed: a counter that spreads the stretches out.
  if (g_stretch.fetch_add(1, std::memory_order_relaxed) % 7 == 0) std::this_thread::sleep_for(20us);
}

TEST_CASE("300 forks while two threads charge and uncharge: no child finds its counter below what it holds") {
  if (memcg::sanitizer_build) {
    // The sanitizers' runtimes are not fork-safe with threads running (see preload_test.cpp).
    MESSAGE("skipped in sanitizer builds");
    return;
  }
  memcg::hierarchy h;
  auto& p = make(h, "P");
  memcg::group* gs[2] = {&make(h, "P/A"), &make(h, "P/B")};
  hook_guard hook(&stretch_hook);
  auto& reg = memcg::detail::stock_registry<memcg::sync::atomic>::instance();
  constexpr int nr_workers = 2;
  // Pages each worker holds: raised after a charge returned, lowered before an uncharge, so
  // that what the child copies is never more than what is charged.
  std::atomic<std::int64_t> held[nr_workers] = {};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int w = 0; w < nr_workers; ++w) {
    workers.emplace_back([&, w] {
      tl_target = true;
      std::int64_t mine[2][2] = {};  // [group][anon, file]
      std::int64_t total = 0;
      unsigned x = 12345u + static_cast<unsigned>(w);
      // seq_cst: held[] is read by the forked child, which copies memory as it was.
      while (!stop.load(std::memory_order_relaxed)) {
        x = x * 1103515245u + 12345u;
        int g = static_cast<int>(x >> 16) % 2, i = static_cast<int>(x >> 18) % 2;
        kind k = i ? kind::file : kind::anon;
        std::int64_t n = 1 + static_cast<std::int64_t>(x >> 20) % 3;
        // Two groups (slots move to the front), two kinds (the primary kind changes), up to
        // 100 pages held (uncharges overflow a slot's batch).
        if ((x >> 24) % 2 && total + n <= 100) {
          if (h.try_charge(*gs[g], k, n).error == ok) {
            mine[g][i] += n;
            held[w].store(total += n, std::memory_order_seq_cst);
          }
        } else if (mine[g][i] >= n) {
          mine[g][i] -= n;
          held[w].store(total -= n, std::memory_order_seq_cst);
          h.uncharge_unchecked(*gs[g], k, n);
        }
      }
      held[w].store(0, std::memory_order_seq_cst);
      for (int g = 0; g < 2; ++g) {
        h.uncharge_unchecked(*gs[g], kind::anon, mine[g][0]);
        h.uncharge_unchecked(*gs[g], kind::file, mine[g][1]);
      }
    });
  }
  int bad = 0, hung = 0;
  for (int i = 0; i < 300; ++i) {
    h.fork_prepare();
    reg.fork_prepare();
    pid_t pid = fork();
    if (pid == 0) {
      reg.fork_child();
      h.fork_child();
      std::int64_t hold = 0;
      for (auto& x : held) hold += x.load(std::memory_order_relaxed);
      // The other threads' stocks were given back; what is left is charged to their holders
      // (and perhaps a charge half done at the fork).
      _exit(p.memory.usage() >= hold ? 0 : 1);
    }
    reg.fork_parent();
    h.fork_parent();
    REQUIRE(pid > 0);
    int status = 0;
    auto end = std::chrono::steady_clock::now() + 5s;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        ++hung;
        break;
      }
      std::this_thread::sleep_for(50us);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++bad;
  }
  stop.store(true, std::memory_order_relaxed);
  for (auto& t : workers) t.join();
  CHECK(hung == 0);
  CHECK(bad == 0);
  h.drain_stocks(nullptr);
  CHECK(p.memory.usage() == 0);
}

// ---- fork without the program's handlers while a thread holds a stock ------------------------

// Where the target thread holds a stock when the process is copied.
enum class holder {
  slow_path,  // a charge's slow path: its CPU's stock held (per thread: its own, busy)
  drainer,    // a drain: the registry lock and every stock it could take
};

std::atomic<int> g_park_site{-1};  // the site the target parks at, once (-1: none)
std::atomic<bool> g_parked{false};
std::atomic<bool> g_forked{false};
std::atomic<std::int64_t> g_fork_ns{0};  // steady clock; 0: no fork under way

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Parks the target at the armed site until the fork is done. If the fork waits for it (the
// registry's own prepare handler does), it leaves 50 ms after the fork began, so that the fork
// goes on with the stock free; without such a handler the process is copied while it is parked.
void park_for_fork(delay_site site) noexcept {
  if (!tl_target) return;
  // acq_rel/acquire: flags between the test's threads; the joins order the rest.
  int armed = static_cast<int>(site);
  if (!g_park_site.compare_exchange_strong(armed, -1, std::memory_order_acq_rel)) return;
  g_parked.store(true, std::memory_order_release);
  const std::int64_t deadline = steady_ns() + 10'000'000'000;  // never for ever
  for (;;) {
    if (g_forked.load(std::memory_order_acquire)) break;
    std::int64_t at = g_fork_ns.load(std::memory_order_acquire), now = steady_ns();
    if ((at && now - at > 50'000'000) || now > deadline) break;
    std::this_thread::sleep_for(100us);
  }
  g_parked.store(false, std::memory_order_release);
}

// What the child saw, in memory shared with the parent (the child may hang before it exits).
struct child_report {
  std::atomic<int> step;             // the last step begun (a hung child stops there)
  std::atomic<std::int64_t> usage;   // the group's usage after the child's first drain
};

// Waits for the child up to `limit`; a child still running then is killed. Returns its exit
// code, or -signal if a signal ended it (SIGALRM: its own alarm; SIGKILL: ours).
int reap_child(pid_t pid, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      kill(pid, SIGKILL);
      (void)waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(200us);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// A program that forks with no fork handlers of its own, while another thread holds a stock:
// the stocks must survive the fork on their own (the registry's pthread_atfork handlers). In
// the child nothing may wait for the holder, who does not exist there, and no page may stay
// charged in a stock nobody can drain.
void fork_while_held(holder where) {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  hook_guard hook(&park_for_fork);
  g_forked.store(false);
  g_fork_ns.store(0);
  g_parked.store(false);
  std::atomic<bool> charged{false}, go{false};
  std::atomic<int> second{-1};  // the target's second operation: 0 ok
  std::thread target([&] {
    tl_target = true;
    // One CPU: its stock parks the batch, and the slow path below holds that stock.
    memcg_test::cpu_pin pin(memcg_test::allowed_cpu(0));
    second.store(h.try_charge(a, kind::anon, 1).error == ok ? -1 : 1);  // 63 pages parked
    charged.store(true, std::memory_order_release);
    wait_for(go, 10s);
    if (where == holder::slow_path) {
      // Another kind misses slot 0's key: the slow path, where the hook parks us.
      g_park_site.store(static_cast<int>(delay_site::stock_busy), std::memory_order_release);
      second.store(h.try_charge(a, kind::file, 1).error == ok ? 0 : 1);
    } else {
      g_park_site.store(static_cast<int>(delay_site::drain_poisoned), std::memory_order_release);
      h.drain_stocks(nullptr);
      second.store(0);
    }
    // Alive until the fork is done (TSan counts a finished, unjoined thread copied into the
    // child as leaked).
    wait_for(g_forked, 10s);
  });
  REQUIRE(wait_for(charged, 5s));
  // The target's pages once its second operation ran (the registry's prepare waits for it).
  const std::int64_t held = where == holder::slow_path ? 2 : 1;
  go.store(true, std::memory_order_release);
  REQUIRE(wait_for(g_parked, 5s));
  void* shared = mmap(nullptr, sizeof(child_report), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(shared != MAP_FAILED);
  auto* report = new (shared) child_report{};
  report->usage.store(-1);
  g_fork_ns.store(steady_ns(), std::memory_order_release);
  pid_t pid = fork();  // no pthread_atfork handler of this program
  if (pid == 0) {
    alarm(5);  // a hang ends the child (the parent also kills it after 10 s)
    int code = 0;
    auto step = [&](int s) { report->step.store(s); };
    // The child's own charges and uncharges through the stocks.
    step(1);
    for (int i = 0; i < 10; ++i)
      if (h.try_charge(a, kind::anon, 1).error != ok) code = 2;
    h.uncharge_unchecked(a, kind::anon, 10);
    step(2);
    h.drain_stocks(nullptr);  // never waits: a held stock is left a request
    report->usage.store(a.memory.usage());
    if (a.memory.usage() != held && !code) code = 3;  // pages stuck in a stock nobody drains
    // Everything that waits for holders.
    step(3);
    (void)h.stat_local(a, kind::anon, true);
    step(4);
    if (h.parked(a) != 0 && !code) code = 4;
    // The target's pages come back from the child too: then nothing is charged.
    step(5);
    h.uncharge_unchecked(a, kind::anon, 1);
    if (where == holder::slow_path) h.uncharge_unchecked(a, kind::file, 1);
    h.drain_stocks(nullptr);
    if (a.memory.usage() != 0 && !code) code = 5;
    if ((h.stat_local(a, kind::anon, true) != 0 || h.stat_local(a, kind::file, true) != 0) && !code)
      code = 6;
    step(6);
    if (h.rmdir("A") != ok && !code) code = 7;
    if (h.root().memory.usage() != 0 && !code) code = 8;
    step(7);
    {
      memcg::hierarchy other;  // its destruction drains every stock, waiting for holders
      auto& b = make(other, "B");
      if (other.try_charge(b, kind::anon, 3).error != ok && !code) code = 9;
    }
    step(8);
    _exit(code);
  }
  g_forked.store(true, std::memory_order_release);
  REQUIRE(pid > 0);
  const int status = reap_child(pid, 10s);
  target.join();
  MESSAGE("child: exit " << status << ", last step " << report->step.load()
                         << ", usage after its drain " << report->usage.load() << " (want "
                         << held << ")");
  CHECK(status == 0);
  CHECK(report->usage.load() == held);
  CHECK(second.load() == 0);
  munmap(shared, sizeof(child_report));
  // The parent: the target's pages back, nothing left.
  h.uncharge_unchecked(a, kind::anon, 1);
  if (where == holder::slow_path) h.uncharge_unchecked(a, kind::file, 1);
  h.drain_stocks(nullptr);
  CHECK(a.memory.usage() == 0);
  CHECK(h.stat_local(a, kind::anon, true) == 0);
  CHECK(h.stat_local(a, kind::file, true) == 0);
}

TEST_CASE("a fork without the program's handlers while a thread is inside a stock's slow path") {
  if (!memcg::detail::memcg_stock<memcg::sync::atomic>::local()->usable()) {
    MESSAGE("the stock is off in this process (no rseq/membarrier): nothing to test");
    return;
  }
  fork_while_held(holder::slow_path);
}

TEST_CASE("a fork without the program's handlers while a thread drains the stocks") {
  fork_while_held(holder::drainer);
}

// A fork from a signal handler that interrupted its own thread inside a stock or a drain: the
// registry's prepare must not wait for that thread (itself). The child of a slow path returns
// from the handler and finishes the interrupted section (the stock's state is the thread's to
// give back); the child of a drain exits at once (a pthread rwlock, the TSan builds' registry
// lock, knows its writer by thread id: the child's thread could not unlock it).
std::atomic<int> g_raise_site{-1};  // the site the target raises SIGUSR1 at, once
std::atomic<pid_t> g_handler_child{0};
volatile sig_atomic_t g_in_handler_child = 0;
volatile sig_atomic_t g_handler_child_exits = 0;

void forking_handler(int) {
  pid_t pid = fork();
  if (pid == 0) {
    if (g_handler_child_exits) _exit(0);
    g_in_handler_child = 1;
  } else {
    g_handler_child.store(pid);  // lock-free: signal-safe
  }
}

void raise_once(delay_site site) noexcept {
  if (!tl_target) return;
  int armed = static_cast<int>(site);
  // acq_rel: the flag between the test and its hook (one thread here).
  if (g_raise_site.compare_exchange_strong(armed, -1, std::memory_order_acq_rel)) raise(SIGUSR1);
}

// Runs in a process of its own (a hang there must not stop the test binary): returns its exit
// code. 0: both the handler's child and this process ended with exact counters.
int fork_in_signal_handler(holder where) {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  struct sigaction sa = {};
  sa.sa_handler = &forking_handler;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, nullptr) != 0) return 10;
  tl_target = true;
  if (h.try_charge(a, kind::anon, 1).error != ok) return 11;  // a batch parked
  memcg::detail::set_delay_hook(&raise_once);
  if (where == holder::slow_path) {
    g_raise_site.store(static_cast<int>(delay_site::stock_busy));
    if (h.try_charge(a, kind::file, 1).error != ok) return 12;  // the handler forks inside
  } else {
    g_handler_child_exits = 1;
    g_raise_site.store(static_cast<int>(delay_site::drain_poisoned));
    h.drain_stocks(nullptr);  // the handler forks with the registry lock and the stocks held
  }
  memcg::detail::set_delay_hook(nullptr);
  const std::int64_t file = where == holder::slow_path ? 1 : 0;
  int code = 0;
  if (g_in_handler_child) alarm(5);  // the handler's child: a hang ends it
  // Both processes: the interrupted section is done; what waits for holders does not hang.
  h.uncharge_unchecked(a, kind::anon, 1);
  h.uncharge_unchecked(a, kind::file, file);
  h.drain_stocks(nullptr);
  if (a.memory.usage() != 0) code = 13;
  if (h.stat_local(a, kind::anon, true) != 0 && !code) code = 14;
  if (h.rmdir("A") != ok && !code) code = 15;
  if (g_in_handler_child) return code ? code : 0;
  pid_t child = g_handler_child.load();
  if (child <= 0) return 16;
  int status = reap_child(child, 10s);
  if (status != 0 && !code) code = status > 0 ? 20 + status : 17;
  return code;
}

TEST_CASE("a fork from a signal handler inside its own thread's stock section or drain waits for nothing") {
  for (holder where : {holder::slow_path, holder::drainer}) {
    pid_t pid = fork();
    if (pid == 0) _exit(fork_in_signal_handler(where));
    REQUIRE(pid > 0);
    const int status = reap_child(pid, 15s);
    MESSAGE("holder " << static_cast<int>(where) << " (0 slow path, 1 drain): exit " << status);
    CHECK(status == 0);
  }
}

// ---- a signal handler that charges -----------------------------------------------------------

memcg::hierarchy* g_sig_h = nullptr;
memcg::group* g_sig_group = nullptr;
std::atomic<int> g_sig_count{0};

std::atomic<std::int64_t> g_sig_held{0};

void charging_handler(int) {
  // A charge of the slot's own kind (the fast path's, which would hit the stock the
  // interrupted slow path is rewriting); the main loop gives it back later.
  if (g_sig_h->try_charge(*g_sig_group, kind::anon, 1, memcg::gfp::noreclaim).error == ok)
    g_sig_held.fetch_add(1, std::memory_order_relaxed);  // lock-free: signal-safe
  g_sig_count.fetch_add(1, std::memory_order_relaxed);  // a counter
}

std::atomic<int> g_underflows{0};
void count_underflow(const memcg::underflow_report&) noexcept {
  g_underflows.fetch_add(1, std::memory_order_relaxed);  // a counter
}

// Raises the signal where a slow path of the target thread has a slot half updated, and in
// every fourth slow-path section.
void signal_hook(delay_site site) noexcept {
  if (!tl_target) return;
  static thread_local unsigned n = 0;
  if (site == delay_site::stock_slot_half || (site == delay_site::stock_busy && ++n % 4 == 0))
    raise(SIGUSR1);
}

TEST_CASE("a signal handler that charges while its thread is inside a slow path of its stock loses nothing") {
  memcg::hierarchy h;
  auto& a = make(h, "A");
  g_sig_h = &h;
  g_sig_group = &a;
  struct sigaction sa = {}, old = {};
  sa.sa_handler = &charging_handler;
  sigemptyset(&sa.sa_mask);
  REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
  hook_guard hook(&signal_hook);
  auto old_underflow = memcg::set_underflow_hook(&count_underflow);
  auto& b = make(h, "B");
  std::int64_t held[2][2] = {};  // [A, B][anon, file]
  tl_target = true;
  unsigned x = 7;
  for (int i = 0; i < 20000; ++i) {
    // Two groups, two kinds, sizes up to 3 and up to 150 pages held: slots move to the front,
    // primary kinds change, uncharges overflow a slot's batch.
    x = x * 1103515245u + 12345u;
    int g = static_cast<int>(x >> 16) % 2, ki = static_cast<int>(x >> 18) % 2;
    kind k = ki ? kind::file : kind::anon;
    memcg::group& grp = g ? b : a;
    std::int64_t n = 1 + static_cast<std::int64_t>(x >> 20) % 3;
    std::int64_t& mine = held[g][ki];
    if (((x >> 24) % 2 && mine + n <= 150) || mine < n) {
      REQUIRE(h.try_charge(grp, k, n).error == ok);
      mine += n;
    } else {
      h.uncharge_unchecked(grp, k, n);
      mine -= n;
    }
    if (i % 64 == 0) h.uncharge_unchecked(a, kind::anon, g_sig_held.exchange(0));
  }
  tl_target = false;
  CHECK(g_sig_count.load() > 1000);
  h.uncharge_unchecked(a, kind::anon, g_sig_held.exchange(0));
  for (int g = 0; g < 2; ++g) {
    h.uncharge_unchecked(g ? b : a, kind::anon, held[g][0]);
    h.uncharge_unchecked(g ? b : a, kind::file, held[g][1]);
  }
  h.drain_stocks(nullptr);
  CHECK(g_underflows.load() == 0);  // nothing given back twice
  for (memcg::group* m : {&a, &b}) {
    CHECK(m->memory.usage() == 0);  // nothing kept
    CHECK(h.stat_local(*m, kind::anon) == 0);
    CHECK(h.stat_local(*m, kind::file) == 0);
  }
  memcg::set_underflow_hook(old_underflow);
  sigaction(SIGUSR1, &old, nullptr);
}

// ---- a statistics read while an owner charges from its stock ------------------------------

std::atomic<bool> g_reader_hold{false};
std::atomic<bool> g_reader_inside{false};
thread_local bool tl_reader = false;

// Stops the reading thread inside its read: in the registry between two stocks (stat_read), or,
// where a read still took the stocks, after poisoning them (drain_poisoned).
void hold_reader(delay_site site) noexcept {
  if (!tl_reader || (site != delay_site::stat_read && site != delay_site::drain_poisoned)) return;
  if (!g_reader_hold.load(std::memory_order_acquire)) return;
  g_reader_inside.store(true, std::memory_order_release);
  while (g_reader_hold.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
}

// A memory.stat read that folded every stock would make every owner's charges bypass their
// stocks while it ran: a charge at the limit could not use its own parked pages and was refused
// (a socket receive then forced past memory.max).
TEST_CASE("a memory.stat read takes no stock: an owner at the limit still charges its parked pages") {
  memcg::hierarchy h;
  auto& g = make(h, "G");
  REQUIRE(h.write_max(g, memcg::default_charge_batch) == ok);
  std::atomic<int> step{0};
  std::errc second{};
  std::thread owner([&] {
    // One CPU: per-CPU stocks park the batch in the stock of the CPU it charged on.
    memcg_test::cpu_pin pin(memcg_test::allowed_cpu(0));
    // One page charged, the rest of the batch parked here: usage == max.
    REQUIRE(h.try_charge(g, kind::anon, 1));
    step.store(1, std::memory_order_release);
    while (step.load(std::memory_order_acquire) != 2) std::this_thread::sleep_for(100us);
    second = h.try_charge(g, kind::anon, 10, memcg::gfp::noreclaim).error;
    if (second == ok) h.uncharge_unchecked(g, kind::anon, 10);
    h.uncharge_unchecked(g, kind::anon, 1);
    step.store(3, std::memory_order_release);
    // Its exit leaves the registry, under the lock the held read keeps: wait for the read.
    while (g_reader_hold.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
  });
  while (step.load(std::memory_order_acquire) != 1) std::this_thread::sleep_for(100us);
  CHECK(g.memory.usage() == g.memory.max());
  hook_guard hooks(&hold_reader);
  g_reader_hold.store(true, std::memory_order_release);
  g_reader_inside.store(false, std::memory_order_release);
  std::thread reader([&] {
    tl_reader = true;
    (void)h.stat(g, kind::anon);  // memory.stat's read
  });
  REQUIRE(wait_for(g_reader_inside, 5000ms));
  step.store(2, std::memory_order_release);  // the owner charges while the read is inside
  while (step.load(std::memory_order_acquire) != 3) std::this_thread::sleep_for(100us);
  g_reader_hold.store(false, std::memory_order_release);
  reader.join();
  owner.join();
  CHECK(second == ok);  // before: ENOMEM (the owner bypassed its stock while the read held it)
  h.drain_stocks(nullptr);
  CHECK(g.memory.usage() == 0);
  CHECK(h.stat(g, kind::anon) == 0);
}

TEST_SUITE_END();

}  // namespace
