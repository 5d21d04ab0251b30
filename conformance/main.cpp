// memcg-conformance: the same workloads in real memory cgroups and through memcg-sim, side by
// side, one row per check. Run it through scripts/conformance.sh.
//
//   memcg-conformance --sim PATH/memcg-sim [--workdir DIR] [--out DIR] [--only NAME]
//
// Exit: 0 every row agrees (or shows its listed divergence), 1 a row differs, 77 skipped (no
// writable memory controller, not root), 2 usage.
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "harness.hpp"

using namespace conf;

namespace {

const std::string usage_f = "memory.usage_in_bytes", limit_f = "memory.limit_in_bytes",
                  maxu_f = "memory.max_usage_in_bytes", failcnt_f = "memory.failcnt",
                  tcp_limit_f = "memory.kmem.tcp.limit_in_bytes", tcp_usage_f = "memory.kmem.tcp.usage_in_bytes",
                  tcp_maxu_f = "memory.kmem.tcp.max_usage_in_bytes", tcp_failcnt_f = "memory.kmem.tcp.failcnt";

std::string S(long long v) { return std::to_string(v); }

long long field(const std::optional<std::string>& reply, int i) {  // "ok A B C": field i (1-based)
  if (!reply) return -1;
  std::istringstream in(*reply);
  std::string w;
  for (int k = 0; k <= i && (in >> w); ++k)
    if (k == i) return std::strtoll(w.c_str(), nullptr, 10);
  return -1;
}

void must(const std::optional<std::string>& reply, const std::string& what) {
  if (!reply || reply->rfind("ok", 0) != 0)
    throw std::runtime_error(what + ": " + (reply ? *reply : std::string("agent died")));
}

// Drains the per-CPU stocks that hold pages of g's subtree (and reclaims what is reclaimable):
// mkdir charges the new child's own structures to its parent, a page or three plus a stocked
// batch on whichever CPU ran mkdir; left there, when a later reclaim drains it (asynchronously on
// other CPUs) would vary from run to run. v1 only (force_empty).
void drain(const group& g) {
  if (E.v2) return;
  g.set("memory.force_empty", "0");
  msleep(50);
}

// Usage without the per-CPU stock (up to a batch per CPU, drained by whatever else runs there):
// drained first. Only where the group's reclaimable pages do not matter (force_empty reclaims).
long long settled_usage(const group& g) {
  drain(g);
  return g.get(usage_f);
}

// The agent's own first commands fault in (copy-on-write) the pages its command loop writes, and
// the first write fault makes the anon_vma (slab); after them its usage is a baseline that later
// steps do not move. The group's stocks are drained first (force_empty also reclaims the file
// pages the agent touched, which it faults in again here), so the baseline holds the agent's own
// pages and at most one batch in the per-CPU stock.
void warm_up(agent& a, const group& g) {
  drain(g);
  must(a.call("anon 0"), "warm-up");
  must(a.call("anon 4096"), "warm-up");
}

// The page-cache file of one workload: unlinked by the agent right after it opened it.
std::string tmpfile(const std::string& name) {
  return E.workdir + "/memcg-conf-" + S(::getpid()) + "-" + name + ".tmp";
}

// Host TCP settings, so that memcg-sim starts from the same tcp_mem / tcp_rmem / tcp_wmem.
std::string sysctl_line(const std::string& name, const std::string& file) {
  auto v = slurp(file);
  std::string s = v ? *v : "";
  std::replace(s.begin(), s.end(), '\t', ' ');
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return "sysctl " + name + " " + s;
}
std::vector<long long> sysctl_values(const std::string& file) {
  std::vector<long long> r;
  if (auto v = slurp(file)) {
    std::istringstream in(*v);
    long long x;
    while (in >> x) r.push_back(x);
  }
  return r;
}

// ===========================================================================================
// anon memory, touched step by step, then past the parent's limit

void anon_workload() {
  group A = mkgroup("anon");
  A.set(limit_f, "16M");
  group B = mkgroup("anon/B");
  drain(A);
  long long a_own = A.get(usage_f) - B.get(usage_f);
  agent ag = spawn(B, {24 * mib, 0});
  warm_up(ag, B);
  long long b0 = B.get(usage_f);
  std::vector<long long> kd;
  long long prev = b0;
  for (int i = 0; i < 8; ++i) {
    must(ag.call("anon " + S(mib)), "anon step");
    long long cur = B.get(usage_f);
    kd.push_back(cur - prev);
    prev = cur;
  }
  // Past the limit, a page per fault: with no swap nothing is reclaimable, the kernel OOM-kills.
  auto r = ag.call("anon " + S(24 * mib));
  int status = ag.reap();
  bool killed = !r && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  long long amax = A.get(maxu_f), bmax = B.get(maxu_f);
  // The kill counts in the victim's group (v1 oom_control is local).
  long long oom_kill = E.v2 ? A.keyed("memory.events")["oom_kill"] : B.keyed("memory.oom_control")["oom_kill"];

  sim s("anon");
  s.run({"mkdir anon", "write anon memory.limit_in_bytes 16M", "mkdir anon/B"});
  if (a_own > 0) s.run1("charge anon kmem " + S(a_own));  // the child's structures
  if (b0 > 0) s.run1("charge anon/B anon " + S(b0));
  std::vector<long long> sd;
  long long sprev = s.read("anon/B", usage_f).value_or(0);
  for (int i = 0; i < 8; ++i) {
    // The kernel charges a page per fault: so does the scenario (the stock's batches show).
    s.run(std::vector<std::string>(static_cast<std::size_t>(mib / page), "charge anon/B anon 4K"));
    long long cur = s.read("anon/B", usage_f).value_or(0);
    sd.push_back(cur - sprev);
    sprev = cur;
  }
  long long su = s.read("anon", usage_f).value_or(0);
  long long fits = std::max(0LL, (16 * mib - su) / page - 1);
  s.run(std::vector<std::string>(static_cast<std::size_t>(fits), "charge anon/B anon 4K"));
  bool refused = false;
  std::string refusal;
  for (int i = 0; i < 80 && !refused && !s.dead; ++i) {
    auto out = s.run1("charge anon/B anon 4K");
    for (const auto& l : out)
      if (l.rfind("error: ", 0) == 0) { refused = true; refusal = l.find("ENOMEM") != std::string::npos ? "ENOMEM" : l; }
  }
  auto samax = s.read("anon", maxu_f), sbmax = s.read("anon/B", maxu_f);
  auto soom = s.read("anon", "memory.events", "oom"), soomk = s.read("anon", "memory.events", "oom_kill");

  long long worst = 0;
  for (std::size_t i = 0; i < kd.size(); ++i) worst = std::max(worst, std::llabs(kd[i] - (i < sd.size() ? sd[i] : 0)));
  auto list = [](const std::vector<long long>& v) {
    bool same = std::all_of(v.begin(), v.end(), [&](long long x) { return x == v.front(); });
    if (same && !v.empty()) return S(v.front()) + " ×" + S(static_cast<long long>(v.size()));
    std::string r;
    for (long long x : v) r += (r.empty() ? "" : ",") + S(x);
    return r;
  };
  row rw{"anon, 8 steps of 1 MiB: usage delta per step", list(kd), list(sd), "exact",
         kd.size() == sd.size() && worst == 0, ""};
  rows.push_back(rw);
  add_abs("anon past a 16 MiB parent limit: parent max_usage (= its limit)", amax, samax, 0);
  add_abs("anon past a 16 MiB parent limit: child max_usage (limit + speculative batch)", bmax, sbmax, 0,
          "parent's own " + S(a_own) + " B (kmem)");
  add_divergence("anon past the limit, nothing reclaimable: the kernel OOM-kills, we refuse",
                 std::string(killed ? "SIGKILL" : "not killed") + ", oom_kill " + S(oom_kill),
                 (refused ? refusal : std::string("not refused")) + ", oom " + (soom ? S(*soom) : "n/a") +
                     ", oom_kill " + (soomk ? S(*soomk) : "n/a"),
                 killed && oom_kill >= 1, refused && refusal == "ENOMEM" && soomk && *soomk == 0);
}

// ===========================================================================================
// page cache written past a 16 MiB parent limit

struct pc_run {
  std::vector<long long> usage, failcnt;  // after each MiB, of the parent
  std::vector<long long> samples;         // the parent's usage every 256 KiB
  long long f0 = 0, cache = -1;
};

pc_run pagecache_kernel(const std::string& name, long long piece, long long& b0, long long& a_own) {
  pc_run r;
  group A = mkgroup(name);
  A.set(limit_f, "16M");
  group B = mkgroup(name + "/B");
  drain(A);
  a_own = A.get(usage_f) - B.get(usage_f);
  agent ag = spawn(B, {0, mib});
  warm_up(ag, B);
  must(ag.call("file_open " + tmpfile(name)), "open");
  b0 = B.get(usage_f);
  r.f0 = A.get(failcnt_f);
  for (int i = 0; i < 32; ++i) {
    if (piece >= mib) {
      must(ag.call("file_write " + S(mib) + " " + S(piece)), "write");
    } else {
      for (int q = 0; q < 4; ++q) {  // usage sampled every 256 KiB: reclaim's sawtooth
        must(ag.call("file_write " + S(mib / 4) + " " + S(piece)), "write");
        r.samples.push_back(A.get(usage_f));
      }
    }
    // Written pages are dirty; memcg reclaim does not write them back itself. Clean them each
    // MiB so that the oldest pages reclaim finds are clean, as the model's reclaimable pages are.
    must(ag.call("file_fsync"), "fsync");
    r.usage.push_back(A.get(usage_f));
    r.failcnt.push_back(A.get(failcnt_f));
  }
  msleep(2100);  // memory.stat is flushed every 2 s
  auto st = B.keyed("memory.stat");
  r.cache = E.v2 ? st["file"] : st["cache"];
  ag.stop();
  return r;
}

pc_run pagecache_sim(const std::string& name, long long piece, long long b0, long long a_own) {
  pc_run r;
  sim s(name);
  s.run({"mkdir " + name, "write " + name + " memory.limit_in_bytes 16M", "mkdir " + name + "/B"});
  if (a_own > 0) s.run1("charge " + name + " kmem " + S(a_own));
  if (b0 > 0) s.run1("charge " + name + "/B anon " + S(b0));
  r.f0 = s.read(name, failcnt_f).value_or(-1);
  for (int i = 0; i < 32; ++i) {
    if (piece >= mib) {
      s.run1("charge " + name + "/B file " + S(piece));
    } else {
      for (int q = 0; q < 4; ++q) {
        s.run(std::vector<std::string>(static_cast<std::size_t>(mib / 4 / piece),
                                       "charge " + name + "/B file " + S(piece)));
        r.samples.push_back(s.read(name, usage_f).value_or(-1));
      }
    }
    r.usage.push_back(s.read(name, usage_f).value_or(-1));
    r.failcnt.push_back(s.read(name, failcnt_f).value_or(-1));
  }
  r.cache = s.read(name + "/B", "memory.stat", "file").value_or(-1);
  return r;
}

void pagecache_workload() {
  if (E.workdir.empty()) {
    rows.push_back(row{"page cache rows", "skipped", "", "", true, "work directory is tmpfs"});
    return;
  }
  long long b0 = 0, a_own = 0;
  pc_run k1 = pagecache_kernel("pc1m", mib, b0, a_own);
  pc_run s1 = pagecache_sim("pc1m", mib, b0, a_own);
  add_rel("page cache, 32 MiB in 1 MiB writes past a 16 MiB parent limit: failcnt", k1.failcnt.back() - k1.f0,
          s1.failcnt.back() - s1.f0, 10);
  add_rel("page cache, 1 MiB writes: final page cache of the writer", k1.cache, s1.cache, 1);

  pc_run k4 = pagecache_kernel("pc4k", 4 * kib, b0, a_own);
  pc_run s4 = pagecache_sim("pc4k", 4 * kib, b0, a_own);
  // Steady state: the last 12 MiB, well past the limit.
  auto per_mib = [](const pc_run& r) { return (r.failcnt[31] - r.failcnt[19]) / 12; };
  // Mean and largest distance below the limit over the last 12 MiB (48 samples).
  auto headroom = [](const pc_run& r, bool mx) {
    long long sum = 0, m = 0, n = 0;
    for (std::size_t i = r.samples.size() >= 48 ? r.samples.size() - 48 : 0; i < r.samples.size(); ++i, ++n) {
      sum += 16 * mib - r.samples[i];
      m = std::max(m, 16 * mib - r.samples[i]);
    }
    return mx ? m : (n ? sum / n : -1);
  };
  add_rel("page cache, 4 KiB writes past a 16 MiB parent limit: failcnt per MiB", per_mib(k4), per_mib(s4), 10);
  add_abs("page cache, 4 KiB writes: usage below the limit, mean of 48 samples", headroom(k4, false),
          headroom(s4, false), 8 * page, "kernel max " + S(headroom(k4, true)) + ", ours max " + S(headroom(s4, true)));
}

// ===========================================================================================
// limit writes and reset writes

void limits_workload() {
  group L = mkgroup("limits");
  sim s("limits");
  s.run1("mkdir limits");

  int e1 = L.set(limit_f, "16777316");
  long long k_round = L.get(limit_f);
  auto o1 = s.run1("write limits memory.limit_in_bytes 16777316");
  auto s_round = s.read("limits", limit_f);
  add_abs("limit write of 16 MiB + 100 bytes reads back (rounded down to pages)", e1 ? -e1 : k_round, s_round, 0);

  L.set(limit_f, "-1");
  s.run1("write limits memory.limit_in_bytes -1");
  add_abs("limit write of -1 reads back (unlimited)", L.get(limit_f), s.read("limits", limit_f), 0);
  int e_max = L.set(limit_f, "max");
  auto o_max = s.run1("write limits memory.limit_in_bytes max");
  add_same("limit write of the word max (v1 file)", errno_name(e_max),
           sim::has(o_max, "error: ") ? "EINVAL" : "ok", "v1 files take -1, not max (fixed after this harness found it)");

  L.set(limit_f, "12M");
  s.run1("write limits memory.limit_in_bytes 12M");
  agent ag = spawn(L, {8 * mib + mib, mib});
  warm_up(ag, L);
  long long b0 = L.get(usage_f);
  must(ag.call("anon " + S(8 * mib)), "anon");
  must(ag.call("file_open " + tmpfile("limits")), "open");
  for (int i = 0; i < 8; ++i) {
    must(ag.call("file_write " + S(mib) + " " + S(mib)), "write");
    must(ag.call("file_fsync"), "fsync");
  }
  long long k_fc = L.get(failcnt_f);
  s.run1("charge limits anon " + S(b0 + 8 * mib));
  s.run(std::vector<std::string>(8, "charge limits file 1M"));

  int e_busy = L.set(limit_f, "4M");
  long long k_lim = L.get(limit_f), k_u = L.get(usage_f);
  auto o_busy = s.run1("write limits memory.limit_in_bytes 4M");
  std::string s_busy = "ok";
  for (const auto& l : o_busy)
    if (l.rfind("error: ", 0) == 0) s_busy = l.find("EBUSY") != std::string::npos ? "EBUSY" : l;
  auto s_lim = s.read("limits", limit_f), s_u = s.read("limits", usage_f);
  add_same("limit write of 4M below 8 MiB of anon (no swap): result", errno_name(e_busy), s_busy);
  add_abs("… the limit after the refused write (unchanged)", k_lim, s_lim, 0);
  add_abs("… usage after it (the page cache it reclaimed stays reclaimed)", k_u, s_u, 64 * page,
          "a stock batch: the kernel drains the per-CPU stock first");

  // Reset writes: any value resets (the kernel ignores what was written).
  auto s_fc = s.read("limits", failcnt_f);
  int e_f = L.set(failcnt_f, "5");
  long long k_f = L.get(failcnt_f);
  auto o_f = s.run1("write limits memory.failcnt 5");
  auto s_f = s.read("limits", failcnt_f);
  add_same("write 5 to memory.failcnt (was kernel " + S(k_fc) + ", ours " + (s_fc ? S(*s_fc) : "n/a") + ")",
           errno_name(e_f) + ", then " + S(k_f),
           std::string(sim::has(o_f, "error: ") ? "EINVAL" : "ok") + ", then " + (s_f ? S(*s_f) : "n/a"));
  int e_m = L.set(maxu_f, "5");
  long long k_m = L.get(maxu_f), k_mu = L.get(usage_f);
  auto o_m = s.run1("write limits memory.max_usage_in_bytes 5");
  auto s_m = s.read("limits", maxu_f), s_mu = s.read("limits", usage_f);
  auto reset_ok = [](std::optional<long long> m, std::optional<long long> u) { return m && u && *m == *u; };
  add_same("write 5 to memory.max_usage_in_bytes: result, then max_usage = usage",
           errno_name(e_m) + ", " + (k_m == k_mu ? "yes" : "no (" + S(k_m) + " vs " + S(k_mu) + ")"),
           std::string(sim::has(o_m, "error: ") ? "EINVAL" : "ok") + ", " + (reset_ok(s_m, s_mu) ? "yes" : "no"));
  ag.stop();
}

// ===========================================================================================
// soft limits on two siblings under a parent's limit

void soft_workload() {
  if (E.workdir.empty()) return;
  struct split { long long x = -1, y = -1; };
  auto run_kernel = [](const std::string& name, const std::string& soft_on) {
    group P = mkgroup(name);
    P.set(limit_f, "16M");
    group X = mkgroup(name + "/X"), Y = mkgroup(name + "/Y");
    if (soft_on == "X") X.set("memory.soft_limit_in_bytes", "4M");
    if (soft_on == "Y") Y.set("memory.soft_limit_in_bytes", "4M");
    drain(P);
    agent ax = spawn(X, {0, mib}), ay = spawn(Y, {0, mib});
    warm_up(ax, X);
    warm_up(ay, Y);
    long long bx = X.get(usage_f), by = Y.get(usage_f);
    for (auto* a : {&ax, &ay}) {
      must(a->call("file_open " + tmpfile(name + (a == &ax ? "X" : "Y"))), "open");
      for (int i = 0; i < 12; ++i) {
        must(a->call("file_write " + S(mib) + " " + S(mib)), "write");
        must(a->call("file_fsync"), "fsync");
      }
    }
    split r{X.get(usage_f), Y.get(usage_f)};
    ax.stop();
    ay.stop();
    return std::make_pair(r, std::make_pair(bx, by));
  };
  auto run_sim = [](const std::string& name, const std::string& soft_on, long long bx, long long by) {
    sim s(name);
    s.run({"mkdir " + name, "write " + name + " memory.limit_in_bytes 16M", "mkdir " + name + "/X",
           "mkdir " + name + "/Y"});
    if (!soft_on.empty()) s.run1("write " + name + "/" + soft_on + " memory.soft_limit_in_bytes 4M");
    if (bx > 0) s.run1("charge " + name + "/X anon " + S(bx));
    if (by > 0) s.run1("charge " + name + "/Y anon " + S(by));
    s.run(std::vector<std::string>(12, "charge " + name + "/X file 1M"));
    s.run(std::vector<std::string>(12, "charge " + name + "/Y file 1M"));
    return split{s.read(name + "/X", usage_f).value_or(-1), s.read(name + "/Y", usage_f).value_or(-1)};
  };
  auto [kn, bn] = run_kernel("softnone", "");
  auto [kx, bxx] = run_kernel("softx", "X");
  auto [ky, byy] = run_kernel("softy", "Y");
  split sn = run_sim("softnone", "", bn.first, bn.second);
  split sx = run_sim("softx", "X", bxx.first, bxx.second);
  split sy = run_sim("softy", "Y", byy.first, byy.second);
  add_abs("soft limits, 12 MiB of page cache in one child, then 12 in its sibling, under a 16 MiB parent, "
          "none set: first child's usage", kn.x, sn.x, mib,
          "second child: kernel " + S(kn.y) + ", ours " + S(sn.y) +
              "; ±1 MiB: 32-page rounds vs the kernel's priority-scaled scan");
  add_abs("… soft limit 4M on the first child: its usage minus with none", kx.x - kn.x, sx.x - sn.x, mib,
          "v1 limit reclaim ignores soft limits");
  add_abs("… soft limit 4M on the second child: its usage minus with none", ky.y - kn.y, sy.y - sn.y, mib);
}

// ===========================================================================================
// TCP over loopback

struct conn { long long rmem, rcvbuf, fwd, wq, sndbuf, drops, inq, outq; };
std::vector<conn> meminfo(agent& a) {
  auto r = a.call("tcp_meminfo");
  must(r, "meminfo");
  std::vector<conn> v;
  std::istringstream in(r->substr(2));
  std::string w;
  while (in >> w) {
    conn c{};
    std::sscanf(w.c_str(), "%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld", &c.rmem, &c.rcvbuf, &c.fwd, &c.wq,
                &c.sndbuf, &c.drops, &c.inq, &c.outq);
    v.push_back(c);
  }
  return v;
}

std::vector<std::string> tcp_sysctls(long long rcvbuf, long long sndbuf) {
  auto rm = sysctl_values("/proc/sys/net/ipv4/tcp_rmem"), wm = sysctl_values("/proc/sys/net/ipv4/tcp_wmem");
  std::vector<std::string> r{"sysctl memcg.socket_accounting v1",
                             sysctl_line("net.ipv4.tcp_mem", "/proc/sys/net/ipv4/tcp_mem")};
  if (rm.size() == 3) r.push_back("sysctl net.ipv4.tcp_rmem " + S(rm[0]) + " " + S(rcvbuf > 0 ? rcvbuf : rm[1]) + " " + S(rm[2]));
  if (wm.size() == 3) r.push_back("sysctl net.ipv4.tcp_wmem " + S(wm[0]) + " " + S(sndbuf > 0 ? sndbuf : wm[1]) + " " + S(wm[2]));
  return r;
}

long long truesize_16k = 0;  // rmem_alloc of one 16 KiB segment, measured without pressure

// Two receivers under one parent, no pressure: truesize, the parent's sum, zero after close.
void tcp_calm_workload() {
  group P = mkgroup("tcpsum"), T1 = mkgroup("tcpsum/r1"), T2 = mkgroup("tcpsum/r2"), Q = mkgroup("tcppeer1");
  T1.set(tcp_limit_f, "4M");  // v1: a tcp limit turns socket accounting on for the group
  T2.set(tcp_limit_f, "4M");
  agent r1 = spawn(T1, {0, 64 * kib}), r2 = spawn(T2, {0, 64 * kib}), q = spawn(Q, {0, 64 * kib});
  long long p1 = field(r1.call("tcp_listen"), 1), p2 = field(r2.call("tcp_listen"), 1);
  must(q.call("tcp_connect " + S(p1) + " 1"), "connect");
  must(q.call("tcp_connect " + S(p2) + " 1"), "connect");
  must(r1.call("tcp_accept 1"), "accept");  // the sender starts only after the accept
  must(r2.call("tcp_accept 1"), "accept");
  long long u0 = settled_usage(T1);
  must(q.call("tcp_send 2 16384"), "send");
  msleep(100);
  long long k1 = T1.get(tcp_usage_f), k2 = T2.get(tcp_usage_f), kp = P.get(tcp_usage_f), u1 = settled_usage(T1);
  auto m1 = meminfo(r1);
  truesize_16k = m1.empty() ? 0 : m1[0].rmem / 2;
  must(r1.call("tcp_read_all"), "read");
  must(r2.call("tcp_read_all"), "read");
  must(r1.call("tcp_close"), "close");
  must(r2.call("tcp_close"), "close");
  must(q.call("tcp_close"), "close");
  msleep(100);
  long long kz = P.get(tcp_usage_f);

  sim s("tcpsum");
  s.run(tcp_sysctls(m1.empty() ? 0 : m1[0].rcvbuf, 0));
  s.run({"mkdir tcpsum", "mkdir tcpsum/r1", "mkdir tcpsum/r2", "write tcpsum/r1 " + tcp_limit_f + " 4M",
         "write tcpsum/r2 " + tcp_limit_f + " 4M", "socket tcpsum/r1 a", "socket tcpsum/r2 b"});
  auto su0 = s.read("tcpsum/r1", usage_f);
  s.run({"recv a " + S(truesize_16k), "recv b " + S(truesize_16k), "recv a " + S(truesize_16k),
         "recv b " + S(truesize_16k)});
  auto s1 = s.read("tcpsum/r1", tcp_usage_f), s2 = s.read("tcpsum/r2", tcp_usage_f), sp = s.read("tcpsum", tcp_usage_f);
  auto su1 = s.read("tcpsum/r1", usage_f);
  s.run({"consume a " + S(2 * truesize_16k), "consume b " + S(2 * truesize_16k), "close a", "close b"});
  auto sz = s.read("tcpsum", tcp_usage_f);

  add_rel("tcp, no pressure, 2 × 16 KiB received: the receiver's tcp usage", k1, s1, 3,
          "memcg-sim fed the measured truesize " + S(truesize_16k) + " per segment");
  add_abs("tcp: the parent's tcp usage minus the sum of its two children's", kp - k1 - k2,
          sp && s1 && s2 ? std::optional<long long>(*sp - *s1 - *s2) : std::nullopt, 0,
          "kernel parent " + S(kp) + ", ours " + (sp ? S(*sp) : "n/a"));
  add_abs("tcp: the parent's tcp usage after the data is read and the sockets closed", kz, sz, 0);
  add_abs("v1: socket pages in memory.usage_in_bytes (change while 32 KiB queued)", u1 - u0,
          su0 && su1 ? std::optional<long long>(*su1 - *su0) : std::nullopt, 4 * page,
          "kernel tcp usage " + S(k1) + "; v1 counts sockets only in memory.kmem.tcp.*");
  r1.stop();
  r2.stop();
  q.stop();
}

// A receiver that does not read: conns connections, the sender writes 16 KiB until it stalls.
void tcp_receiver_workload(const std::string& name, const std::string& limit, int conns, bool main_rows) {
  group R = mkgroup(name), Q = mkgroup(name + "peer");
  R.set(tcp_limit_f, limit);
  agent r = spawn(R, {0, 64 * kib}), q = spawn(Q, {0, 64 * kib});
  long long port = field(r.call("tcp_listen"), 1);
  must(q.call("tcp_connect " + S(port) + " " + S(conns)), "connect");
  must(r.call("tcp_accept " + S(conns)), "accept");
  long long u0 = settled_usage(R);
  must(q.call("tcp_blast 16384 300"), "blast");
  msleep(100);
  long long kmax = R.get(tcp_maxu_f), kuse = R.get(tcp_usage_f), kfail = R.get(tcp_failcnt_f), u1 = settled_usage(R);
  auto m = meminfo(r);
  long long rmax = 0, rmin = -1, inqmax = 0, drops = 0;
  for (const auto& c : m) {
    rmax = std::max(rmax, c.rmem);
    rmin = rmin < 0 ? c.rmem : std::min(rmin, c.rmem);
    inqmax = std::max(inqmax, c.inq);
    drops += c.drops;
  }
  // The reset write, on the tcp counter, after the receiver read everything (usage below max).
  must(r.call("tcp_read_all"), "read");
  msleep(50);
  int e_reset = R.set(tcp_maxu_f, "5");
  long long kmax2 = R.get(tcp_maxu_f), kuse2 = R.get(tcp_usage_f);

  sim s(name);
  s.run(tcp_sysctls(m.empty() ? 0 : m[0].rcvbuf, 0));
  s.run({"mkdir " + name, "write " + name + " " + tcp_limit_f + " " + limit});
  for (int i = 0; i < conns; ++i) s.run1("socket " + name + " c" + S(i));
  auto su0 = s.read(name, usage_f);
  std::vector<bool> done(static_cast<std::size_t>(conns), false);
  long long sdrops = 0;
  for (int round = 0; round < 64; ++round) {
    bool any = false;
    for (int i = 0; i < conns; ++i) {
      if (done[static_cast<std::size_t>(i)]) continue;
      any = true;
      auto out = s.run1("recv c" + S(i) + " " + S(truesize_16k));
      if (sim::has(out, "drop ")) { done[static_cast<std::size_t>(i)] = true; ++sdrops; }
    }
    if (!any || s.dead) break;
  }
  auto smax = s.read(name, tcp_maxu_f), suse = s.read(name, tcp_usage_f), sfail = s.read(name, tcp_failcnt_f);
  auto su1 = s.read(name, usage_f);
  long long srmax = 0;
  for (int i = 0; i < conns; ++i) srmax = std::max(srmax, s.read("c" + S(i), "sock.rmem_alloc").value_or(-1));
  for (int i = 0; i < conns; ++i)
    if (auto q2 = s.read("c" + S(i), "sock.rmem_alloc"); q2 && *q2 > 0) s.run1("consume c" + S(i) + " " + S(*q2));
  auto o_reset = s.run1("write " + name + " " + tcp_maxu_f + " 5");
  auto smax2 = s.read(name, tcp_maxu_f), suse2 = s.read(name, tcp_usage_f);

  std::string what = "tcp, receiver not reading, tcp limit " + limit + ", " + S(conns) + " connections: ";
  if (main_rows) {
    add_rel(what + "tcp max_usage", kmax, smax, 5,
            "kernel " + S(drops) + " drops, per-queue rmem " + S(rmin) + ".." + S(rmax) + "; ours " + S(sdrops) + " drops");
    add_rel(what + "tcp usage at the end", kuse, suse, 5);
    add_abs("v1: socket pages in memory.usage_in_bytes (change while the queues filled)", u1 - u0,
            su0 && su1 ? std::optional<long long>(*su1 - *su0) : std::nullopt, 4 * page,
            "kernel tcp usage " + S(kuse));
    add_divergence("tcp limit hit: memory.kmem.tcp.failcnt (6.18 tracks failcnt on the memory counter only)",
                   S(kfail), sfail ? S(*sfail) : "n/a", kfail == 0, sfail && *sfail > 0);
    add_same("write 5 to memory.kmem.tcp.max_usage_in_bytes: result, then max_usage = usage",
             errno_name(e_reset) + ", " + (kmax2 == kuse2 ? "yes" : "no"),
             std::string(sim::has(o_reset, "error: ") ? "EINVAL" : "ok") + ", " +
                 (smax2 && suse2 && *smax2 == *suse2 ? "yes" : "no"));
  } else {
    // A queue stops at the first segment past rcvbuf (ours) or when the window closes (the
    // kernel): one segment's truesize apart at most.
    add_abs(what + "largest receive queue (rmem_alloc)", rmax, srmax, truesize_16k,
            "kernel rcvbuf " + S(m.empty() ? 0 : m[0].rcvbuf) + ", bytes queued " + S(inqmax) +
                ", smallest queue " + S(rmin) + "; ± one segment");
    add_abs(what + "tcp usage", kuse, suse, conns * (truesize_16k + page), "± one segment and a page per queue");
  }
  r.stop();
  q.stop();
}

// A sender at its group's tcp limit: 4 connections, 16 KiB writes until EAGAIN everywhere.
void tcp_sender_workload() {
  group G = mkgroup("tcpsnd"), Q = mkgroup("tcpsndpeer");
  G.set(tcp_limit_f, "256K");
  agent w = spawn(G, {0, 64 * kib}), q = spawn(Q, {0, 64 * kib});
  long long port = field(q.call("tcp_listen"), 1);
  must(w.call("tcp_connect " + S(port) + " 4"), "connect");
  must(q.call("tcp_accept 4"), "accept");
  auto m0 = meminfo(w);
  auto blast = w.call("tcp_blast 16384 300");
  must(blast, "blast");
  msleep(100);
  auto m = meminfo(w), mq = meminfo(q);
  long long kmax = G.get(tcp_maxu_f), kuse = G.get(tcp_usage_f);
  int eagain = 0;
  {
    std::istringstream in(blast->substr(2));
    std::string t;
    while (in >> t) eagain += t.size() > 2 && t.substr(t.size() - 2) == ":1";
  }
  long long wq = 0, outq = 0, sndbuf_end = 0;
  for (const auto& c : m) { wq += c.wq; outq += c.outq; sndbuf_end = std::max(sndbuf_end, c.sndbuf); }
  long long truesize_w = outq > 0 ? wq * 16384 / outq : 16384;  // per 16 KiB write, unacked

  sim s("tcpsnd");
  s.run(tcp_sysctls(0, m0.empty() ? 0 : m0[0].sndbuf));
  s.run({"mkdir tcpsnd", "write tcpsnd " + tcp_limit_f + " 256K"});
  for (int i = 0; i < 4; ++i) s.run1("socket tcpsnd s" + S(i));
  std::vector<long long> acked(4, 0);
  for (std::size_t i = 0; i < 4 && i < mq.size(); ++i) acked[i] = mq[i].inq / 16384;  // taken by the peer
  std::vector<bool> blocked(4, false);
  std::vector<long long> sent(4, 0);
  int sblocked = 0;
  for (int round = 0; round < 128 && sblocked < 4 && !s.dead; ++round)
    for (int i = 0; i < 4; ++i) {
      auto ui = static_cast<std::size_t>(i);
      if (blocked[ui]) continue;
      auto out = s.run1("send s" + S(i) + " " + S(truesize_w));
      if (sim::has(out, "block ")) { blocked[ui] = true; ++sblocked; continue; }
      if (sent[ui]++ < acked[ui]) s.run1("ack s" + S(i) + " " + S(truesize_w));
    }
  auto smax = s.read("tcpsnd", tcp_maxu_f), suse = s.read("tcpsnd", tcp_usage_f);
  auto ssnd = s.read("s0", "sock.sndbuf");

  add_rel("tcp, sender at its group's tcp limit 256K, 4 connections, 16 KiB writes: tcp max_usage", kmax, smax, 5,
          "kernel sndbuf " + S(m0.empty() ? 0 : m0[0].sndbuf) + " → " + S(sndbuf_end) + "; ours sndbuf at the end " +
              (ssnd ? S(*ssnd) : "n/a") + "; ours fed truesize " + S(truesize_w) + " per write");
  // Where a connection stops is decided once per write (sk_stream_memory_free before the copy,
  // the moderated sndbuf after a refused raise): up to one write per connection either way.
  add_abs("… tcp usage when every connection is stuck", kuse, suse, 4 * truesize_w,
          "± one write per connection (a block is decided per 16 KiB write)");
  add_same("… connections whose last write blocked (EAGAIN / block)", S(eagain) + " of 4", S(sblocked) + " of 4");
  w.stop();
  q.stop();
}

// ===========================================================================================
// memory.kmem.limit_in_bytes: accepted and ignored by 6.18, enforced by us

void kmem_workload() {
  group K = mkgroup("kmem");
  int e = K.set("memory.kmem.limit_in_bytes", "1M");
  long long kl = K.get("memory.kmem.limit_in_bytes");
  agent a = spawn(K, {0, 64 * kib});
  long long k0 = K.get("memory.kmem.usage_in_bytes");
  must(a.call("pipes 64 65536"), "pipes");
  long long k1 = K.get("memory.kmem.usage_in_bytes"), kf = K.get("memory.kmem.failcnt");
  a.stop();

  sim s("kmem");
  s.run({"mkdir kmem", "write kmem memory.kmem.limit_in_bytes 1M"});
  auto sl = s.read("kmem", "memory.kmem.limit_in_bytes");
  auto out = s.run(std::vector<std::string>(64, "charge kmem kmem 64K"));
  long long refused = std::count_if(out.begin(), out.end(), [](const std::string& l) { return l.rfind("error: ", 0) == 0; });
  auto su = s.read("kmem", "memory.kmem.usage_in_bytes"), sf = s.read("kmem", "memory.kmem.failcnt");
  std::string kstr = "write " + errno_name(e) + ", reads " + fmt(kl) + ", kmem +" + S(k1 - k0) + " B, nothing refused";
  std::string ostr = "limit " + (sl ? fmt(*sl) : std::string("n/a")) + ", kmem " + (su ? S(*su) : "n/a") + " B, " +
                     S(refused) + " of 64 refused";
  add_divergence("memory.kmem.limit_in_bytes 1M, then 64 pipes × 64 KiB of pipe buffers (kernel) / 64 kmem charges (ours)",
                 kstr, ostr, e == 0 && kl == unlimited && k1 - k0 > mib,
                 sl && *sl == mib && refused > 0 && su && *su <= mib);
  add_divergence("… memory.kmem.failcnt", S(kf), sf ? S(*sf) : "n/a", kf == 0, sf && *sf > 0);
}

}  // namespace

int main(int argc, char** argv) {
  std::string sim_path, workdir = ".", out, only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (a == "--sim") sim_path = next();
    else if (a == "--workdir") workdir = next();
    else if (a == "--out") out = next();
    else if (a == "--only") only = next();
    else { std::fprintf(stderr, "usage: memcg-conformance --sim MEMCG_SIM [--workdir DIR] [--out DIR] [--only NAME]\n"); return 2; }
  }
  if (sim_path.empty() || ::access(sim_path.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "memcg-conformance: --sim must name the memcg-sim executable\n");
    return 2;
  }
  set_sim_path(sim_path);
  if (!out.empty()) set_transcript_dir(out);
  if (::geteuid() != 0) {
    std::printf("conformance: SKIP: not root (real memory cgroups need root or a delegated cgroup)\n");
    return 77;
  }
  std::string why;
  auto e = setup_env("memcg-conf", workdir, why);
  install_signal_cleanup();
  if (!e) {
    std::printf("conformance: SKIP: %s\n", why.c_str());
    cleanup();
    return 77;
  }
  E = *e;

  utsname u{};
  ::uname(&u);
  char date[32];
  std::time_t t = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&t));
  std::printf("Linux %s, cgroup %s, %ld CPUs, %s; groups below %s\n\n", u.release, E.v2 ? "v2" : "v1",
              ::sysconf(_SC_NPROCESSORS_ONLN), date, E.base.c_str());

  struct workload { const char* name; std::function<void()> run; bool v1_only; };
  std::vector<workload> all = {
      {"anon", anon_workload, false},
      {"pagecache", pagecache_workload, false},
      {"limits", limits_workload, true},
      {"soft", soft_workload, true},
      {"tcp", [] { tcp_calm_workload(); tcp_receiver_workload("tcpr64k", "64K", 4, true);
                   tcp_receiver_workload("tcpr4m", "4M", 16, false); tcp_sender_workload(); }, true},
      {"kmem", kmem_workload, true},
  };
  for (const auto& w : all) {
    if (!only.empty() && only != w.name) continue;
    if (w.v1_only && E.v2) {
      rows.push_back(row{std::string(w.name) + " rows", "skipped", "", "", true, "v1 files only"});
      continue;
    }
    auto start = std::chrono::steady_clock::now();
    int mark = group_mark();
    ::alarm(60);  // a stuck workload ends the run (the handler removes every group)
    try {
      w.run();
    } catch (const std::exception& ex) {
      rows.push_back(row{std::string(w.name) + ": harness error", ex.what(), "", "", false, ""});
    }
    ::alarm(0);
    remove_groups_since(mark);
    std::fprintf(stderr, "conformance: %s took %.1f s\n", w.name,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  cleanup();
  print_table();
  long long differ = std::count_if(rows.begin(), rows.end(), [](const row& r) { return !r.agree; });
  std::printf("\n%zu rows, %lld differ\n", rows.size(), differ);
  return differ ? 1 : 0;
}
