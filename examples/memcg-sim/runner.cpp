// memcg-sim: running checked commands against a single-thread hierarchy (docs/scenarios.md).
//
// Contents:
//   page_cache     the simulator's reclaimable memory of one group: one FIFO of file and
//                  slab_reclaimable charges, freed oldest first when reclaim asks
//   tracer         --trace: every step of the charge path and of reclaim, as teaching text;
//                  --explain: the same steps summed per command (story)
//   runner_state   the hierarchy, page caches, virtual clock, the TCP protocol and its
//                  sockets, and the command table
//
// Sockets (memcg/sockmem.hpp): one protocol with the kernel's defaults and no per-thread
// reserve, so every read is exact; `recv` runs as the stack's receive path (no reclaim: at the
// group's limit the segment is dropped, unless the receive queue is empty: TCP always takes that
// one; above rcvbuf it is dropped), `send` as the application (may reclaim; it blocks while the
// send queue holds sndbuf or more). `write NAME sock.rcvbuf|sock.sndbuf SIZE` is SO_RCVBUF /
// SO_SNDBUF.
// The virtual clock is the hierarchy's clock policy: throttling and `sleep` advance it, and
// memory.pressure and the socket-pressure hold read it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "memcg/sockmem.hpp"
#include "../page_cache.hpp"
#include "sim.hpp"

namespace sim {
namespace {

using memcg::kind;
using memcg::reclaim_filter;

// ---- formatting ----

std::string errno_name(std::errc e) {
  switch (e) {
    case std::errc::not_enough_memory: return "ENOMEM";
    case std::errc::device_or_resource_busy: return "EBUSY";
    case std::errc::no_such_file_or_directory: return "ENOENT";
    case std::errc::file_exists: return "EEXIST";
    default: return "EINVAL";
  }
}

std::string path_of(const group* g) { return g ? g->path() : std::string("?"); }

// "12800 pages (50M)": pages with a readable size beside them, for traces.
std::string pages_str(std::int64_t n) {
  std::string s = std::to_string(n) + (n == 1 ? " page" : " pages");
  if (n < 0 || n > memcg::page_counter_max) return s;  // no size beside what no counter holds
  std::int64_t b = n * memcg::page_size;
  if (b >= (1 << 20) && b % (1 << 20) == 0) return s + " (" + std::to_string(b >> 20) + "M)";
  if (b >= 1024 && b % 1024 == 0 && n != 0) return s + " (" + std::to_string(b >> 10) + "K)";
  return s;
}

// "100M", "30.5M", "4K", "1500": bytes as a person reads them (--explain).
std::string human(std::int64_t b) {
  char buf[48];
  if (b >= (1 << 20) && b % (1 << 20) == 0) return std::to_string(b >> 20) + "M";
  if (b >= (1 << 20)) {
    std::snprintf(buf, sizeof buf, "%.1fM", static_cast<double>(b) / (1 << 20));
    return buf;
  }
  if (b >= 1024 && b % 1024 == 0) return std::to_string(b >> 10) + "K";
  return std::to_string(b);
}

// What reclaim freed during one command: pages per group path and kind (--explain).
using reclaim_log = std::map<std::string, std::map<kind, std::int64_t>>;

// ---- the page cache ----

// One group's reclaimable memory: file pages and slab_reclaimable objects in charge order
// (examples/page_cache.hpp), and what reclaim freed from it for --explain. Invariant: the pages
// of kind k in the queue == the group's own stat of k (memory.stat.local), because every
// charge, uncharge, reclaim and rmdir of those kinds goes through this queue. `uncharge PATH
// file SIZE` gives back the OLDEST pages of that kind first, as reclaim would; on rmdir the
// parent adopts the removed group's queue in charge order.
class page_cache final : public memcg_example::page_cache<policy> {
 public:
  page_cache(hierarchy& h, sim::group& g, reclaim_log* log)
      : memcg_example::page_cache<policy>(h, g), log_(log) {}

 private:
  void on_reclaimed(kind k, std::int64_t pages) override {
    (*log_)[memcg::basic_reclaimer<policy>::group()->path()][k] += pages;
  }
  reclaim_log* log_;
};

// ---- --trace ----

class tracer final : public memcg::charge_tracer<policy>, public memcg::reclaim_observer<policy> {
 public:
  std::int64_t request = 0;  // pages the current charge asked for
  bool print = false;        // --trace: print every step
  bool explain = false;      // --explain: sum the steps into notes
  bool note_uncharges = false;  // an `uncharge` command runs (not reclaim's own)
  std::int64_t batch = 64;      // memcg.charge_batch when the command started
  std::string prefix = "  trace: ";

  // --explain: one sentence per kind of step, in the order first seen; a retried charge
  // repeats its steps, which are counted (and reclaim's pages summed) instead of repeated.
  struct note {
    std::string key, text;
    int count = 1;
    std::int64_t asked = 0, freed = 0;
  };
  std::vector<note> notes;
  // Seen during the current command, for the socket story and the plot's marks.
  int refusals = 0;
  bool forced_seen = false;
  std::string last_refusal;  // "the tcp counter of rx (usage 16 + 9 > limit 16 pages)"

  void begin_command() {
    notes.clear();
    refusals = 0;
    forced_seen = false;
    last_refusal.clear();
  }

  void trace(const memcg::trace_record<policy>& r) noexcept override {
    record(r);
    if (!print) return;
    using tp = memcg::trace_point;
    std::string g = path_of(r.group), over = path_of(r.over);
    std::string cname(memcg::counter_name(r.counter));
    switch (r.point) {
      case tp::stock_hit:
        line(g + ": " + pages_str(r.nr_pages) + " of " + std::string(memcg::kind_name(r.k)) +
             " taken from the stock (pre-charged earlier; no counter touched)");
        break;
      case tp::try_counters:
        if (r.nr_pages > request)
          line(g + ": charge a batch of " + pages_str(r.nr_pages) + " (" + pages_str(request) +
               " asked, the rest would go to the stock) to the memory counter of " + g +
               " and of every ancestor");
        else
          line(g + ": charge exactly " + pages_str(r.nr_pages) + " to the memory counter of " + g +
               " and of every ancestor");
        break;
      case tp::refused:
        line("the memory counter of " + over + " refused: usage " + pages_str(r.over->memory.usage()) +
             " + " + std::to_string(r.nr_pages) + " > max " + limit(r.over->memory.max()) +
             " (its failcnt is now " + std::to_string(r.over->memory.failcnt()) + ")");
        break;
      case tp::reclaim:
        if (r.counter == memcg::counter_id::kmem)
          line("that was reclaim of kernel reclaimables only (slab_reclaimable; page cache is left "
               "alone) under " + over + " for its kmem counter: freed " + std::to_string(r.value) +
               " of " + std::to_string(r.nr_pages) + " pages asked");
        else
          line("that was the reclaim round under " + over +
               " (the group that refused, not the charging one; `max` event counted there): freed " +
               std::to_string(r.value) + " of " + std::to_string(r.nr_pages) +
               " pages asked (reclaim never asks for fewer than 32)");
        break;
      case tp::drain:
        line("drained the stocks of " + over + "'s subtree: pre-charged pages go back to the counters");
        break;
      case tp::retry:
        line("still no room: retry (" + std::to_string(r.value) + " retries left)");
        break;
      case tp::oom:
        line(over + " is out of memory: `oom` event; " +
             (r.value ? std::string("its OOM handler freed memory, retry")
                      : std::string("no OOM handler freed anything (memcg-sim registers none)")));
        break;
      case tp::forced:
        line("must-not-fail charge: " + pages_str(r.nr_pages) + " forced into the " + cname +
             " counter of " + over + ", above its limit");
        break;
      case tp::nomem:
        line("the charge fails: ENOMEM at the " + cname + " counter of " + over);
        break;
      case tp::charged:
        if (r.value > 0)
          line("the counters took " + pages_str(r.nr_pages + r.value) + ": " +
               std::to_string(r.nr_pages) + " for this charge, " + std::to_string(r.value) +
               " kept in the stock for the next charges of " + g);
        else
          line("the counters took " + pages_str(r.nr_pages));
        break;
      case tp::over_high:
        line(over + " is above its memory.high (" + limit(r.over->memory.high()) + "): " +
             std::to_string(r.value) + " pages added to the task's over-high debt, paid when the command ends");
        break;
      case tp::high_reclaim:
        line("memory.high of " + over + ": `high` event, reclaim asked " + std::to_string(r.nr_pages) +
             ", freed " + std::to_string(r.value));
        break;
      case tp::high_penalty:
        if (r.value > 0)
          line("over-high debt of " + std::to_string(r.nr_pages) + " pages: throttled " +
               std::to_string(r.value) + " ms (the penalty grows with the square of the overage)");
        else
          line("over-high debt of " + std::to_string(r.nr_pages) +
               " pages: penalty at most 10 ms, not paid");
        break;
      case tp::sub_refused: {
        const auto& c = r.counter == memcg::counter_id::kmem ? r.over->kmem : r.over->tcp;
        line("the " + cname + " sub-counter of " + over + " refused " + pages_str(r.nr_pages) +
             ": usage " + std::to_string(c.usage()) + " + " + std::to_string(r.nr_pages) + " > limit " +
             limit(c.max()) + " (its failcnt is now " + std::to_string(c.failcnt()) + ")");
        break;
      }
      case tp::uncharge:
        // Inside reclaim the walk's steps already say it (on_step).
        if (r.value == 0)
          line(g + ": " + pages_str(r.nr_pages) + " of " + std::string(memcg::kind_name(r.k)) +
               " given back through the stock");
        break;
    }
  }

  void on_step(group& g, std::int64_t asked, std::int64_t freed, std::int64_t emin,
               std::int64_t elow, bool soft_limit_phase, bool low_pass) noexcept override {
    if (explain && low_pass)
      add("low:" + g.path(), g.path() + " was reclaimed below its memory.low (nothing else was "
                                       "left to reclaim): a `low` event");
    if (!print) return;
    // Consecutive steps of one group are summed into one line: a 50M charge takes 400 steps.
    step_run k{&g, emin, elow, soft_limit_phase, low_pass};
    if (run_.count && !(run_.same(k))) flush();
    if (!run_.count) run_ = k;
    ++run_.count;
    run_.asked += asked;
    run_.freed += freed;
  }
  void on_protected(group& g, std::int64_t usage, std::int64_t emin, std::int64_t elow,
                    bool by_min) noexcept override {
    if (explain)
      add("protected:" + g.path(),
          "reclaim left " + g.path() + " alone: its usage " + pages_str(usage) +
              " is within its effective " +
              (by_min ? "memory.min (" + pages_str(emin) + ")"
                      : "memory.low (" + pages_str(elow) + ", first pass)"));
    if (!print) return;
    // Said once per walk and group: every round would repeat it.
    if (std::find(protected_.begin(), protected_.end(), &g) != protected_.end()) return;
    protected_.push_back(&g);
    line("  reclaim leaves " + g.path() + " alone: usage " + std::to_string(usage) +
         " at or below its effective " + (by_min ? "min " + std::to_string(emin)
                                                 : "low " + std::to_string(elow) + " (first pass)"));
  }
  void on_walk_end(group& root, std::int64_t target,
                   const memcg::reclaim_result& r) noexcept override {
    if (!print) return;
    std::string s = "  reclaim walk under " + root.path() + " done: target " + std::to_string(target) +
                    ", asked " + std::to_string(r.scanned) + ", freed " + std::to_string(r.reclaimed);
    if (r.low_reclaimed) s += " (a second pass reclaimed low-protected groups)";
    line(s);
    protected_.clear();
  }

 private:
  static std::string limit(std::int64_t pages) {
    return pages >= memcg::page_counter_max ? std::string("unlimited") : std::to_string(pages);
  }

  void add(const std::string& key, const std::string& text, std::int64_t asked = 0,
           std::int64_t freed = 0) {
    for (note& n : notes) {
      if (n.key != key) continue;
      ++n.count;
      n.asked += asked;
      n.freed += freed;
      return;
    }
    notes.push_back({key, text, 1, asked, freed});
  }

  // The steps in kernel words, for --explain; and what the socket story and the plot need.
  void record(const memcg::trace_record<policy>& r) {
    using tp = memcg::trace_point;
    std::string g = path_of(r.group), over = path_of(r.over);
    std::string cname(memcg::counter_name(r.counter));
    std::string kname(memcg::kind_name(r.k));
    switch (r.point) {
      case tp::refused:
        ++refusals;
        last_refusal = "the memory counter of " + over + " (usage " + pages_str(r.over->memory.usage()) +
                       " + " + std::to_string(r.nr_pages) + " > memory.max " +
                       limit(r.over->memory.max()) + ")";
        break;
      case tp::sub_refused: {
        ++refusals;
        const auto& c = r.counter == memcg::counter_id::kmem ? r.over->kmem : r.over->tcp;
        last_refusal = "the " + cname + " counter of " + over + " (usage " + pages_str(c.usage()) +
                       " + " + std::to_string(r.nr_pages) + " > limit " + limit(c.max()) + ")";
        break;
      }
      case tp::forced: forced_seen = true; break;
      default: break;
    }
    if (!explain) return;
    switch (r.point) {
      case tp::stock_hit:
        add("stock", "stock hit: " + pages_str(r.nr_pages) + " of " + kname + " taken from " + g +
                         "'s stock (pre-charged by an earlier batch; no counter touched)");
        break;
      case tp::try_counters:
      case tp::retry:
        break;
      case tp::charged:
        if (r.value > 0)
          add("charged", "batch refilled: the memory counters of " + g +
                             (g == "/" ? "" : " and its ancestors") + " took " +
                             pages_str(r.nr_pages + r.value) + ", " + std::to_string(r.nr_pages) +
                             " for this charge and " + std::to_string(r.value) +
                             " kept in the stock for the next ones");
        else
          add("charged", "charged " + pages_str(r.nr_pages) + " of " + kname + " to the memory counter of " +
                             g + (g == "/" ? "" : " and of every ancestor") +
                             (batch == 1 ? " (the stock is off)"
                              : r.nr_pages > batch ? " (more than a batch: no stock refill)"
                                                   : ""));
        break;
      case tp::refused:
        add("refused:" + over, "the memory counter of " + over + " is full: usage " +
                                   pages_str(r.over->memory.usage()) + " + " +
                                   std::to_string(r.nr_pages) + " > memory.max " +
                                   limit(r.over->memory.max()) + " (failcnt " +
                                   std::to_string(r.over->memory.failcnt()) + ")");
        break;
      case tp::sub_refused:
        add("sub:" + over + cname, "refused by the " + cname + " counter of " + over + ": " +
                                       last_refusal.substr(last_refusal.find('(') + 1,
                                                           last_refusal.size() - last_refusal.find('(') - 2) +
                                       " (its failcnt counts each refusal)");
        break;
      case tp::reclaim:
        if (r.counter == memcg::counter_id::kmem)
          add("reclaim-kmem:" + over, "reclaim of kernel reclaimables only (slab_reclaimable) under " +
                                          over + " for its kmem counter", r.nr_pages, r.value);
        else
          add("reclaim:" + over, "reclaim under " + over + " (the group that refused; a `max` event there)",
              r.nr_pages, r.value);
        break;
      case tp::drain:
        add("drain:" + over, "drained the stocks of " + over +
                                 "'s subtree: pre-charged pages went back to the counters");
        break;
      case tp::oom:
        add("oom:" + over, over + " is out of memory: an `oom` event" +
                               (r.value ? std::string(", its OOM handler freed memory")
                                        : std::string(" (memcg-sim registers no OOM handler)")));
        break;
      case tp::forced:
        add("forced:" + over, "must not fail: " + pages_str(r.nr_pages) + " forced into the " + cname +
                                  " counter of " + over + ", past its limit");
        break;
      case tp::nomem:
        add("nomem", "the charge fails at the " + cname + " counter of " + over);
        break;
      case tp::over_high:
        add("over_high:" + over, over + " is above its memory.high (" + limit(r.over->memory.high()) +
                                     " pages): the task owes the overage, paid when the command ends");
        break;
      case tp::high_reclaim:
        add("high_reclaim:" + over, "memory.high of " + over + ": a `high` event and reclaim",
            r.nr_pages, r.value);
        break;
      case tp::high_penalty:
        add("high_penalty", r.value > 0 ? "over-high debt of " + pages_str(r.nr_pages) + ": throttled " +
                                              std::to_string(r.value) + " ms"
                                        : "over-high debt of " + pages_str(r.nr_pages) +
                                              ": a penalty of at most 10 ms, not paid");
        break;
      case tp::uncharge:
        if (!note_uncharges) break;  // reclaim's own uncharges: the reclaim note says them
        if (r.value == 0)
          add("uncharge", pages_str(r.nr_pages) + " of " + kname + " went back to " + g +
                              "'s stock: the counters (memory.current) keep them until the stock drains");
        else if (batch == 1)  // the stock takes them and gives them straight back
          add("uncharge", pages_str(r.nr_pages) + " of " + kname + " uncharged: " +
                              std::to_string(r.value) + " went back to the counters (the stock is off)");
        else if (r.value > r.nr_pages)  // the slot passed a batch: it gave back all it held
          add("uncharge", pages_str(r.nr_pages) + " of " + kname + " uncharged: " +
                              std::to_string(r.value) + " went back to the counters, with the " +
                              std::to_string(r.value - r.nr_pages) + " that " + g +
                              "'s stock held (more than a batch: the stock drains)");
        else
          add("uncharge", pages_str(r.nr_pages) + " of " + kname + " uncharged: " +
                              std::to_string(r.value) + " went back to the counters" +
                              (r.value < r.nr_pages ? ", the rest to the stock" : ""));
        break;
    }
  }
  // A run of reclaim steps of one group with the same protection, not printed yet.
  struct step_run {
    group* g = nullptr;
    std::int64_t emin = 0, elow = 0;
    bool soft = false, low = false;
    std::int64_t count = 0, asked = 0, freed = 0;
    bool same(const step_run& o) const {
      return g == o.g && emin == o.emin && elow == o.elow && soft == o.soft && low == o.low;
    }
  };

  void flush() noexcept {
    if (!run_.count) return;
    step_run r = run_;
    run_ = {};
    std::string s = "  reclaim " + std::string(r.count == 1 ? "step" : std::to_string(r.count) + " steps") +
                    " in " + r.g->path() + ": asked " + std::to_string(r.asked) + ", freed " +
                    std::to_string(r.freed) + " (oldest reclaimable pages first)";
    if (r.soft) s += "; above its soft limit, so reclaimed first";
    if (r.emin > 0 || r.elow > 0)
      s += "; effective protection min " + std::to_string(r.emin) + ", low " + std::to_string(r.elow);
    if (r.low) s += "; low protection broken: `low` event";
    emit(s);
  }
  void line(const std::string& s) noexcept {
    flush();
    emit(s);
  }
  void emit(const std::string& s) { std::printf("%s%s\n", prefix.c_str(), s.c_str()); }

 public:
  // A line of the trace from outside the charge path (the socket story).
  void say(const std::string& s) {
    if (print) line(s);
  }

 private:

  step_run run_;
  std::vector<group*> protected_;  // groups already reported protected in this walk
};

struct outcome {
  bool ok = true;
  std::string error;  // "ENOMEM (limit of A)"
  bool refused = false;  // `drop` / `block`: not an error, but it satisfies a `!`
};
outcome ok() { return {}; }
outcome refused() { return {false, "", true}; }
outcome fail(std::errc e, const std::string& detail = "") {
  return {false, errno_name(e) + (detail.empty() ? "" : " (" + detail + ")")};
}

using proto = memcg::basic_proto_memory<policy>;
using sock = memcg::basic_sock_memory<policy>;

bool known_file(std::string_view f) { return memcg::find_control_file(f) != nullptr; }
bool writable_file(std::string_view f) {
  const memcg::control_file* cf = memcg::find_control_file(f);
  return cf && cf->write;
}
// `read - tcp.*` reads the protocol; `read NAME sock.*` a socket.
bool socket_file(std::string_view f) { return f.starts_with("sock."); }
// A socket's files, memcg-sim's own: those it reads, and the two setsockopt() writes.
struct socket_file_entry {
  std::string_view name;
  bool write;
};
constexpr socket_file_entry socket_files[] = {
    {"sock.forward_alloc", false}, {"sock.rmem_alloc", false}, {"sock.wmem_queued", false},
    {"sock.under_pressure", false}, {"sock.rcvbuf", true},     {"sock.sndbuf", true}};
const socket_file_entry* find_socket_file(std::string_view f) {
  for (const auto& e : socket_files)
    if (e.name == f) return &e;
  return nullptr;
}

// The protocol's pressure flag, entered and left (tcp_enter/leave_memory_pressure()).
class pressure_watch final : public memcg::basic_proto_pressure_listener<policy> {
 public:
  std::vector<std::pair<bool, std::string>> changes;  // since the runner last looked
  void enter_memory_pressure(memcg::basic_proto_memory<policy>& p) noexcept override {
    changes.emplace_back(true, "the protocol entered memory pressure: tcp.memory_allocated " +
                                   std::to_string(p.memory_allocated()) + " > tcp_mem pressure " +
                                   std::to_string(p.sysctl_mem().pressure) +
                                   " (every socket now passes a fairness test)");
  }
  void leave_memory_pressure(memcg::basic_proto_memory<policy>& p, std::int64_t ms) noexcept override {
    changes.emplace_back(false, "the protocol left memory pressure: tcp.memory_allocated " +
                                    std::to_string(p.memory_allocated()) + " <= tcp_mem min " +
                                    std::to_string(p.sysctl_mem().min) + " (after " +
                                    std::to_string(ms) + " ms)");
  }
};

}  // namespace

class runner_state {
  static proto::options proto_options(memcg::clock_source* c) {
    proto::options o;
    o.pcpu_reserve = 0;  // the simulator: every read exact (docs/model.md, "Sockets")
    o.clock = c;
    return o;
  }

 public:
  runner_state(const options& o, std::string title) : opts_(o), title_(std::move(title)) {
    h_.set_clock(&clock_);
    add_cache(h_.root());
    // Always installed: it prints only with --trace, and counts refusals for the socket story.
    tracer_.print = o.trace;
    tracer_.explain = o.explain;
    if (o.explain) tracer_.prefix = "    trace: ";
    h_.set_tracer(&tracer_);
    h_.set_reclaim_observer(&tracer_);
    proto_.set_pressure_listener(&pressure_);
    if (!o.plot.empty()) record(0, "start", false);
  }
  ~runner_state() {
    // The library outlives no reclaimer: unregister before the caches go.
    for (auto& [g, c] : caches_) h_.unregister_reclaimer(*c);
    h_.set_tracer(nullptr);
    h_.set_reclaim_observer(nullptr);
    proto_.set_pressure_listener(nullptr);
  }

  void run(const command& c) {
    using fn = outcome (runner_state::*)(const command&);
    // The command table: one run function per command name of parser.cpp's table.
    static const std::map<std::string_view, fn> table = {
        {"mkdir", &runner_state::do_mkdir},       {"rmdir", &runner_state::do_rmdir},
        {"write", &runner_state::do_write},       {"read", &runner_state::do_read},
        {"charge", &runner_state::do_charge},     {"uncharge", &runner_state::do_uncharge},
        {"sysctl", &runner_state::do_sysctl},     {"expect", &runner_state::do_expect},
        {"socket", &runner_state::do_socket},     {"recv", &runner_state::do_socket},
        {"consume", &runner_state::do_socket},    {"send", &runner_state::do_socket},
        {"ack", &runner_state::do_socket},        {"close", &runner_state::do_socket},
        {"sleep", &runner_state::do_sleep},
    };
    line_ = c.line;
    charged_in_.clear();
    concerned_.clear();
    sock_events_.clear();
    story_.clear();
    reclaim_log_.clear();
    tracer_.begin_command();
    tracer_.note_uncharges = c.name == "uncharge";
    tracer_.batch = h_.charge_batch();
    if (opts_.explain) explain_header(c);
    auto it = table.find(c.name);
    outcome r = it == table.end() ? fail(std::errc::invalid_argument, "unknown command")
                                  : (this->*(it->second))(c);
    if (!r.ok && !r.refused && !opts_.explain)
      out("error: " + std::to_string(c.line) + ": " + c.text + ": " + r.error);
    if (c.must_fail && r.ok) {
      out("FAIL " + std::to_string(c.line) + ": expected " + c.text + " to fail");
      failed_ = true;
    } else if (!c.must_fail && !r.ok && !r.refused) {
      failed_ = true;
    }
    // The end of a command is the task's throttle point (return to user space in the kernel).
    std::string throttled;
    // throttle_point() sleeps the penalty on the virtual clock, as stall time (memory.pressure).
    if (std::int64_t ms = h_.throttle_point(); ms > 0) {
      throttled = charged_in_.empty() ? std::string("/") : charged_in_;
      out("throttle " + throttled + " " + std::to_string(ms));
    }
    if (opts_.explain) explain_outcome(c, r);
    if (!opts_.plot.empty()) {
      record(c.line, c.text, !r.ok);
      sample& sm = samples_.back();
      sm.throttled = throttled;
      sm.failure_expected = !r.ok && c.must_fail;
      sm.concerned = concerned_.empty() ? concerned_of(c) : concerned_;
      sm.sock_events = sock_events_;
    }
  }

  int exit_code() const { return failed_ ? 1 : 0; }

  void finish() {
    if (opts_.explain) explain_table();
    if (opts_.plot.empty()) return;
    if (!write_plot(opts_.plot, title_, samples_))
      std::fprintf(stderr, "memcg-sim: cannot write %s\n", opts_.plot.c_str());
  }

 private:
  // ---- groups ----

  void add_cache(group& g) {
    caches_[&g] = std::make_unique<page_cache>(h_, g, &reclaim_log_);  // registers on g
    if (std::find(seen_.begin(), seen_.end(), g.path()) == seen_.end()) seen_.push_back(g.path());
  }

  // A live group by PATH, or an error outcome.
  group* lookup(const std::string& path, outcome* err) {
    if (group* g = h_.find(path)) return g;
    *err = fail(std::errc::no_such_file_or_directory, "no group " + path);
    return nullptr;
  }

  outcome do_mkdir(const command& c) {
    auto r = h_.mkdir(c.args[0]);
    if (!r) {
      if (r.error == std::errc::invalid_argument) return fail(r.error, "bad PATH");
      if (r.error == std::errc::no_such_file_or_directory) return fail(r.error, "no parent group");
      return fail(r.error);
    }
    add_cache(*r.g);
    return ok();
  }

  outcome do_rmdir(const command& c) {
    group* g = h_.find(c.args[0]);
    std::errc e = h_.rmdir(c.args[0]);
    if (e == std::errc::device_or_resource_busy) return fail(e, "it has children");
    if (e == std::errc::invalid_argument)
      return fail(e, c.args[0] == "/" ? "the root cannot be removed" : "bad PATH");
    if (e != std::errc{}) return fail(e);
    // The library moved our page cache to the parent; fold it into the parent's own queue so
    // that `uncharge PARENT file` and reclaim see one queue in charge order.
    group* parent = g->live();
    auto it = caches_.find(g);
    h_.unregister_reclaimer(*it->second);
    caches_.at(parent)->adopt(*it->second);
    caches_.erase(it);
    return ok();
  }

  // ---- control files ----

  outcome do_write(const command& c) {
    outcome err;
    if (socket_file(c.args[1])) return write_socket(c);
    group* g = lookup(c.args[0], &err);
    if (!g) return err;
    const std::string& file = c.args[1];
    if (!known_file(file)) return fail(std::errc::no_such_file_or_directory, "no control file " + file);
    if (!writable_file(file)) return fail(std::errc::invalid_argument, file + " is read-only");
    std::string value;
    for (std::size_t i = 2; i < c.args.size(); ++i) value += (i > 2 ? " " : "") + c.args[i];
    std::errc e = memcg::write_control(h_, *g, file, value);
    if (e == std::errc::invalid_argument) return fail(e, "invalid value for " + file);
    if (e == std::errc::device_or_resource_busy) return fail(e, "usage is above the new limit");
    if (e != std::errc{}) return fail(e);
    return ok();
  }

  // What `read TARGET FILE` reads, or an error outcome.
  std::optional<memcg::control_value> read_target(const std::string& target,
                                                  const std::string& file, outcome* err) {
    if (target == "-") return read_protocol(file, err);
    if (socket_file(file)) return read_socket(target, file, err);
    group* g = lookup(target, err);
    if (!g) return std::nullopt;
    if (!known_file(file)) {
      *err = fail(std::errc::no_such_file_or_directory, "no control file " + file);
      return std::nullopt;
    }
    memcg::control_value v = memcg::read_control(h_, *g, file);
    if (!v) {
      *err = fail(v.error);
      return std::nullopt;
    }
    return v;
  }

  outcome do_read(const command& c) {
    outcome err;
    auto v = read_target(c.args[0], c.args[1], &err);
    if (!v) return err;
    for (const auto& [key, value] : v->entries)
      out(c.args[0] + " " + c.args[1] + " " + (key.empty() ? "" : key + " ") + value);
    return ok();
  }

  // ---- charging ----

  outcome do_charge(const command& c) {
    outcome err;
    group* g = lookup(c.args[0], &err);
    if (!g) return err;
    kind k = *memcg::parse_kind(c.args[1]);
    std::int64_t pages = memcg::bytes_to_pages_up(*parse_size(c.args[2]));
    if (pages == 0) return ok();  // a no-op: no stock is filled by it
    bool nofail = c.args.size() == 4;
    charged_in_ = g->path();
    tracer_.request = pages;
    tracer_.say("--- charge " + g->path() + " " + c.args[1] + " (" + pages_str(pages) + ")" +
                (nofail ? ", must not fail" : ""));
    auto st = h_.try_charge(*g, k, pages, nofail ? memcg::gfp::nofail : memcg::gfp::none);
    if (!st) {
      if (st.error == std::errc::not_enough_memory)
        return fail(st.error, "limit of " + path_of(st.over_limit));
      return fail(st.error, st.error == std::errc::invalid_argument ? "SIZE too large" : "");
    }
    if (memcg::is_reclaimable_kind(k)) caches_.at(g)->add(k, pages, seq_++);
    return ok();
  }

  outcome do_uncharge(const command& c) {
    outcome err;
    group* g = lookup(c.args[0], &err);
    if (!g) return err;
    kind k = *memcg::parse_kind(c.args[1]);
    std::int64_t pages = memcg::bytes_to_pages_up(*parse_size(c.args[2]));
    std::errc e = h_.uncharge(*g, k, pages);
    if (e != std::errc{})
      return fail(e, g->path() + " holds less than " + c.args[2] + " of " + c.args[1]);
    if (pages > 0 && memcg::is_reclaimable_kind(k)) caches_.at(g)->remove(k, pages);
    return ok();
  }

  outcome do_sysctl(const command& c) {
    const std::string& name = c.args[0];
    if (name == "memcg.charge_batch") {
      std::errc e = h_.set_charge_batch(*parse_uint(c.args[1]));
      if (e != std::errc{}) return fail(e, "the batch is 1 to 1024 pages");
      return ok();
    }
    if (name == "memcg.memory_recursiveprot") {
      h_.set_recursive_protection(c.args[1] == "1");
      return ok();
    }
    if (name == "memcg.socket_accounting") {
      using memcg::sock_accounting;
      const std::string& v = c.args[1];  // both, v1 or v2 (checked by the parser)
      std::errc e = h_.set_socket_accounting(v == "v1"   ? sock_accounting::v1
                                             : v == "v2" ? sock_accounting::v2
                                                         : sock_accounting::both);
      if (e != std::errc{}) return fail(e, "socket pages are charged: close the sockets first");
      return ok();
    }
    // net.ipv4.*: three numbers, checked by the parser; the order is checked here.
    std::int64_t v[3];
    for (int i = 0; i < 3; ++i) v[i] = *parse_uint(c.args[1 + i]);
    std::errc e{};
    if (name == "net.ipv4.tcp_mem") e = proto_.set_sysctl_mem({v[0], v[1], v[2]});
    else if (name == "net.ipv4.tcp_rmem") e = proto_.set_sysctl_rmem({v[0], v[1], v[2]});
    else e = proto_.set_sysctl_wmem({v[0], v[1], v[2]});
    if (e != std::errc{})
      return fail(e, name == "net.ipv4.tcp_mem" ? "MIN <= PRESSURE <= MAX" : "MIN <= DEFAULT <= MAX");
    return ok();
  }

  // ---- sockets ----

  // An open socket by NAME, or an error outcome.
  sock* find_socket(const std::string& name, outcome* err) {
    auto it = sockets_.find(name);
    if (it == sockets_.end()) {
      *err = fail(std::errc::no_such_file_or_directory, "no socket " + name);
      return nullptr;
    }
    if (it->second->closed()) {
      *err = fail(std::errc::invalid_argument, "socket " + name + " is closed");
      return nullptr;
    }
    return it->second.get();
  }

  outcome do_socket(const command& c) {
    if (c.name == "socket") {
      outcome err;
      group* g = lookup(c.args[0], &err);
      if (!g) return err;
      if (c.args[1] == "-") return fail(std::errc::invalid_argument, "`-` names the protocol");
      auto& slot = sockets_[c.args[1]];
      if (slot && !slot->closed()) return fail(std::errc::file_exists, "socket " + c.args[1] + " is open");
      slot = std::make_unique<sock>(proto_, g);
      tell("opened " + c.args[1] + " in " + g->path() + ": rcvbuf " + std::to_string(slot->rcvbuf()) +
           ", sndbuf " + std::to_string(slot->sndbuf()) + " (tcp_rmem and tcp_wmem defaults), " +
           sockets_open());
      return ok();
    }
    outcome err;
    sock* s = find_socket(c.args[0], &err);
    if (!s) return err;
    group* g = s->memcg();
    if (g) concerned_ = g->path();
    const sock_view before = view(*s);
    if (c.name == "close") {
      tracer_.say("--- close " + c.args[0]);
      (void)s->close();
      socket_story(c, *s, g, before, {});
      return ok();
    }
    std::int64_t size = *parse_size(c.args[1]);
    if (size > memcg::sk_max_op_size) return fail(std::errc::invalid_argument, "SIZE too large");
    if (g) charged_in_ = g->path();
    tracer_.say("--- " + c.name + " " + c.args[0] + " " + c.args[1] +
                (g ? " (socket of " + g->path() + ")" : std::string(" (socket of no group)")));
    std::errc e{};
    outcome result = ok();
    if (c.name == "recv") {
      e = s->recv(size);
      // Refused by the raise, or the queue is above rcvbuf.
      if (e == std::errc::not_enough_memory || e == std::errc::no_buffer_space) {
        out("drop " + c.args[0] + " " + c.args[1]);
        result = refused();
      }
    } else if (c.name == "send") {
      e = s->send(size);
      // Refused by the raise, or the queue holds sndbuf or more (it would block).
      if (e == std::errc::not_enough_memory || e == std::errc::resource_unavailable_try_again) {
        out("block " + c.args[0] + " " + c.args[1]);
        result = refused();
      }
    } else if (c.name == "consume") {
      e = s->consume(size);
      if (e == std::errc::invalid_argument)
        return fail(e, c.args[0] + " holds " + std::to_string(s->rmem_alloc()) + " received bytes");
    } else {  // ack
      e = s->ack(size);
      if (e == std::errc::invalid_argument)
        return fail(e, c.args[0] + " has " + std::to_string(s->wmem_queued()) + " bytes queued");
    }
    if (result.ok && e != std::errc{}) return fail(e);
    socket_story(c, *s, g, before, e);
    return result;
  }

  // ---- the socket story (--trace, --explain, and the plot's marks) ----

  struct sock_view {
    std::int64_t fwd, rmem, wmem, rcvbuf, sndbuf;
    bool sock_pressure, group_pressure;
    std::int64_t allocated, exceeded;
  };
  sock_view view(sock& s) {
    group* g = s.memcg();
    return {s.forward_alloc(), s.rmem_alloc(), s.wmem_queued(), s.rcvbuf(), s.sndbuf(),
            s.closed() ? false : s.under_memory_pressure(),
            g ? memcg::detail::group_socket_pressure(*g) : false,
            proto_.memory_allocated(), proto_.exceeded()};
  }

  std::string sockets_open() const {
    std::int64_t n = proto_.sockets_allocated();
    return std::to_string(n) + (n == 1 ? " socket open" : " sockets open");
  }

  // One sentence for --trace and --explain.
  void tell(const std::string& s) {
    tracer_.say(s);
    if (opts_.explain) story_.push_back(s);
  }

  // What a socket operation did, in TCP's words: pages scheduled or given back, forced
  // segments, drops and blocks with their reason, sndbuf moderation, pressure entered and left.
  void socket_story(const command& c, sock& s, group* g, const sock_view& b, std::errc e) {
    const sock_view a = view(s);
    const std::string gp = g ? g->path() : std::string("-");
    const std::int64_t pages = a.allocated - b.allocated;
    const memcg::tcp_mem_sysctl lim = proto_.sysctl_mem();
    auto pages_note = [&]() -> std::string {
      if (pages > 0)
        return pages_str(pages) + " scheduled (tcp.memory_allocated " + std::to_string(a.allocated) +
               (g ? ", charged to " + g->path() : std::string()) + "); forward_alloc now " +
               std::to_string(a.fwd);
      if (pages < 0)
        return pages_str(-pages) + " given back (tcp.memory_allocated " + std::to_string(a.allocated) +
               "); forward_alloc now " + std::to_string(a.fwd);
      return "no page accounted: the forward allocation covers it (forward_alloc now " +
             std::to_string(a.fwd) + ")";
    };
    // Who refused the raise: the group's counter (the tracer saw it) or the protocol's tcp_mem.
    auto refuser = [&]() -> std::string {
      if (!tracer_.last_refusal.empty()) return tracer_.last_refusal;
      if (a.exceeded > b.exceeded || b.allocated + 1 > lim.max)
        return "net.ipv4.tcp_mem (memory_allocated would pass " +
               std::string(b.allocated + 1 > lim.max ? "max " + std::to_string(lim.max)
                                                     : "pressure " + std::to_string(lim.pressure) +
                                                           " and the fairness test failed") +
               ")";
      return "the raise decision";
    };
    const std::string& n = c.args[0];
    if (c.name == "recv") {
      if (e == std::errc::no_buffer_space) {
        tell("dropped: rmem_alloc " + std::to_string(b.rmem) + " > rcvbuf " + std::to_string(b.rcvbuf) +
             " (the receive queue is full, whatever memory is free)");
        sock_events_.emplace_back(gp, sock_event::drop);
      } else if (e == std::errc::not_enough_memory) {
        tell("dropped: refused by " + refuser() + "; the receive path may not reclaim, and " + n +
             "'s queue is not empty (" + std::to_string(b.rmem) + " bytes), so the sender must retransmit");
        sock_events_.emplace_back(gp, sock_event::drop);
      } else {
        if (b.rmem == 0 && (a.exceeded > b.exceeded || tracer_.refusals > 0)) {
          tell("refused by " + refuser() + ", but " + n +
               "'s receive queue was empty: TCP takes the first segment anyway, past every limit "
               "(sk_forced_mem_schedule)");
          sock_events_.emplace_back(gp, sock_event::forced);
        }
        tell("received " + c.args[1] + " bytes (rmem_alloc " + std::to_string(a.rmem) + "): " + pages_note());
      }
    } else if (c.name == "send") {
      const bool moderated = a.sndbuf != b.sndbuf;
      if (e == std::errc::resource_unavailable_try_again) {
        tell("blocks: wmem_queued " + std::to_string(b.wmem) + " >= sndbuf " + std::to_string(b.sndbuf) +
             " (nothing charged; the application waits for acks)");
        sock_events_.emplace_back(gp, sock_event::block);
      } else if (e == std::errc::not_enough_memory) {
        tell("blocks: refused by " + refuser() + "; " +
             (moderated ? "sndbuf moderated to " + std::to_string(a.sndbuf) +
                              " (half the queue, at least 4608), and the queue plus this send stays under it"
                        : s.sndbuf_locked() ? "sndbuf " + std::to_string(a.sndbuf) +
                                                  " is locked by SO_SNDBUF (never moderated), and the "
                                                  "queue plus this send stays under it"
                                            : "the queue plus this send stays under sndbuf " +
                                                  std::to_string(a.sndbuf)));
        sock_events_.emplace_back(gp, sock_event::block);
      } else {
        const bool over_proto = a.allocated > lim.max;
        if (moderated || tracer_.forced_seen || (over_proto && pages > 0)) {
          tell("refused by " + refuser() + (moderated ? "; sndbuf moderated to " + std::to_string(a.sndbuf) : "") +
               "; the queue plus this send (" + std::to_string(a.wmem) + ") reaches sndbuf, so it is "
               "forced past the limit (the next send blocks)");
          sock_events_.emplace_back(gp, sock_event::forced);
        }
        tell("queued " + c.args[1] + " bytes (wmem_queued " + std::to_string(a.wmem) + "): " + pages_note());
      }
    } else if (c.name == "consume") {
      tell("the application read " + c.args[1] + " bytes (rmem_alloc " + std::to_string(a.rmem) + "): " +
           pages_note());
    } else if (c.name == "ack") {
      tell("the peer acknowledged " + c.args[1] + " bytes (wmem_queued " + std::to_string(a.wmem) + "): " +
           pages_note());
    } else {  // close
      tell("closed: " + (pages < 0 ? pages_str(-pages) + " given back" : std::string("it held no page")) +
           " (tcp.memory_allocated " + std::to_string(a.allocated) + ", " + sockets_open() + ")");
    }
    if (a.group_pressure != b.group_pressure && g)
      tell(a.group_pressure ? "the sockets of " + g->path() + " are now under memory pressure (a refused "
                                                              "tcp charge, or kmem above its soft limit)"
                            : "the sockets of " + g->path() + " are no longer under memory pressure");
    if (a.group_pressure != b.group_pressure && g)
      sock_events_.emplace_back(gp, a.group_pressure ? sock_event::pressure_on : sock_event::pressure_off);
    for (const auto& [entered, text] : pressure_.changes) {
      tell(text);
      sock_events_.emplace_back("-", entered ? sock_event::pressure_on : sock_event::pressure_off);
    }
    pressure_.changes.clear();
  }

  static memcg::control_value one_value(std::int64_t v) {
    memcg::control_value r;
    r.entries.emplace_back("", std::to_string(v));
    return r;
  }

  std::optional<memcg::control_value> read_protocol(const std::string& file, outcome* err) {
    if (file == "tcp.memory_allocated") return one_value(proto_.memory_allocated());
    if (file == "tcp.memory_pressure") return one_value(proto_.under_memory_pressure() ? 1 : 0);
    if (file == "tcp.sockets_allocated") return one_value(proto_.sockets_allocated());
    *err = fail(std::errc::no_such_file_or_directory, "no protocol file " + file);
    return std::nullopt;
  }

  std::optional<memcg::control_value> read_socket(const std::string& name, const std::string& file,
                                                  outcome* err) {
    sock* s = find_socket(name, err);
    if (!s) return std::nullopt;
    if (file == "sock.forward_alloc") return one_value(s->forward_alloc());
    if (file == "sock.rmem_alloc") return one_value(s->rmem_alloc());
    if (file == "sock.wmem_queued") return one_value(s->wmem_queued());
    if (file == "sock.under_pressure") return one_value(s->under_memory_pressure() ? 1 : 0);
    if (file == "sock.rcvbuf") return one_value(s->rcvbuf());
    if (file == "sock.sndbuf") return one_value(s->sndbuf());
    *err = fail(std::errc::no_such_file_or_directory, "no socket file " + file);
    return std::nullopt;
  }

  // `write NAME sock.rcvbuf SIZE` / `sock.sndbuf`: setsockopt(SO_RCVBUF / SO_SNDBUF).
  outcome write_socket(const command& c) {
    outcome err;
    sock* s = find_socket(c.args[0], &err);
    if (!s) return err;
    const std::string& file = c.args[1];
    const socket_file_entry* f = find_socket_file(file);
    if (!f) return fail(std::errc::no_such_file_or_directory, "no socket file " + file);
    if (!f->write) return fail(std::errc::invalid_argument, file + " is read-only");
    std::optional<std::int64_t> size;
    if (c.args.size() == 3) size = parse_size(c.args[2]);
    if (!size || *size > INT32_MAX) return fail(std::errc::invalid_argument, "invalid value for " + file);
    std::errc e = file == "sock.rcvbuf" ? s->setsockopt_rcvbuf(*size) : s->setsockopt_sndbuf(*size);
    if (e != std::errc{}) return fail(e);
    return ok();
  }

  outcome do_sleep(const command& c) {
    std::int64_t ms = *parse_duration(c.args[0]);  // checked by the parser
    clock_.advance(std::min<std::int64_t>(ms, INT64_MAX / 4 / memcg::usec_per_msec) *
                   memcg::usec_per_msec);
    return ok();
  }

  // ---- expectations ----

  static bool compare(const std::string& actual, const expectation& e) {
    auto a = parse_number(actual), v = parse_number(e.value);
    if (a && v) {
      if (std::isinf(*a) || std::isinf(*v)) {
        bool eq = *a == *v;
        switch (e.op) {
          case compare_op::eq: return eq;
          case compare_op::ne: return !eq;
          case compare_op::lt: return *a < *v;
          case compare_op::le: return *a <= *v;
          case compare_op::gt: return *a > *v;
          case compare_op::ge: return *a >= *v;
        }
      }
      switch (e.op) {
        case compare_op::eq:
          if (e.tolerance_percent) return std::fabs(*a - *v) <= *v * *e.tolerance_percent / 100.0;
          return *a == *v;
        case compare_op::ne: return *a != *v;
        case compare_op::lt: return *a < *v;
        case compare_op::le: return *a <= *v;
        case compare_op::gt: return *a > *v;
        case compare_op::ge: return *a >= *v;
      }
    }
    // Words compare as words; an order between words never holds.
    if (e.op == compare_op::eq) return actual == e.value;
    if (e.op == compare_op::ne) return actual != e.value;
    return false;
  }

  outcome do_expect(const command& c) {
    std::string syntax;
    auto e = split_expect(c.args, &syntax);  // checked by the parser: cannot fail here
    if (!e) return fail(std::errc::invalid_argument, syntax);
    outcome err;
    auto v = read_target(e->target, e->file, &err);
    if (!v) return err;
    std::string actual;
    if (v->keyed) {
      if (e->key.empty()) return fail(std::errc::invalid_argument, e->file + " is keyed: name a KEY");
      auto it = std::find_if(v->entries.begin(), v->entries.end(),
                             [&](const auto& kv) { return kv.first == e->key; });
      if (it == v->entries.end())
        return fail(std::errc::invalid_argument, e->file + " has no key " + e->key);
      actual = it->second;
    } else {
      if (!e->key.empty()) return fail(std::errc::invalid_argument, e->file + " has no keys");
      actual = v->entries.at(0).second;
    }
    if (!compare(actual, *e)) {
      out("FAIL " + std::to_string(c.line) + ": expected " + c.expect_args + " got " + actual);
      failed_ = true;
    } else if (opts_.explain) {
      auto n = parse_number(actual);
      std::string h = n && *n >= 1024 && *n < 1e18 ? human(static_cast<std::int64_t>(*n)) : actual;
      story_.push_back("holds: " + actual + (h != actual ? " (" + h + ")" : ""));
    }
    return ok();
  }

  // ---- the plot ----

  void record(int line, const std::string& label, bool failed) {
    sample s;
    s.line = line;
    s.label = label;
    s.failed = failed;
    for (const std::string& p : seen_) {
      group_sample gs;
      if (group* g = h_.find(p)) {
        gs.alive = true;
        gs.current = g->memory.usage() * memcg::page_size;
        auto lim = [](std::int64_t pages) {
          return pages >= memcg::page_counter_max ? INT64_MAX : pages * memcg::page_size;
        };
        gs.max = lim(g->memory.max());
        gs.high = lim(g->memory.high());
        gs.kmem_max = lim(g->kmem.max());
        gs.tcp_max = lim(g->tcp.max());
        for (kind k : memcg::all_kinds)
          gs.stat.bytes[static_cast<int>(k)] = h_.stat(*g, k) * memcg::page_size;
        gs.ev_max = g->events_local(memcg::event::max);
        gs.ev_oom = g->events_local(memcg::event::oom);
        gs.ev_high = g->events_local(memcg::event::high);
      }
      s.groups.emplace_back(p, gs);
    }
    s.clock_ms = clock_.now_us() / memcg::usec_per_msec;
    const memcg::tcp_mem_sysctl m = proto_.sysctl_mem();
    s.tcp = {proto_.memory_allocated(), m.min, m.pressure, m.max, proto_.under_memory_pressure(),
             proto_.sockets_allocated()};
    samples_.push_back(std::move(s));
  }

  // The group a command addressed, for the plot's failed-command mark ("-": the protocol,
  // "/" when no group is named).
  std::string concerned_of(const command& c) const {
    static const std::vector<std::string_view> by_path = {"mkdir", "rmdir",  "write", "read",
                                                         "charge", "uncharge", "socket"};
    if (c.args.empty()) return "/";
    if (c.name == "expect" || c.name == "read" || c.name == "write") {
      if (c.args[0] == "-") return "-";
      if (c.args.size() > 1 && socket_file(c.args[1])) {
        auto it = sockets_.find(c.args[0]);
        if (it != sockets_.end() && it->second->memcg()) return it->second->memcg()->path();
        return "/";
      }
    }
    if (c.name == "expect" || std::find(by_path.begin(), by_path.end(), c.name) != by_path.end()) {
      std::string p = c.args[0];
      while (p.size() > 1 && p.front() == '/') p.erase(0, 1);
      return p.empty() ? "/" : p;
    }
    if (c.name == "sysctl" && c.args[0].starts_with("net.")) return "-";
    return "/";
  }

  // ---- --explain ----

  // Every line a command prints: indented under its heading in the narrative mode.
  void out(const std::string& s) {
    std::printf("%s%s\n", opts_.explain ? "    | " : "", s.c_str());
  }

  // The comments before a command (the scenario's headings), then the command itself.
  void explain_header(const command& c) {
    std::size_t n = c.heading.size();
    while (n > 0 && c.heading[n - 1].empty()) --n;
    bool start = true;
    for (std::size_t i = 0; i < n; ++i) {
      if (c.heading[i].empty()) {
        start = true;
        continue;
      }
      std::printf("%s%s\n", start ? "\n== " : "   ", c.heading[i].c_str());
      start = false;
    }
    if (n > 0) std::printf("\n");
    std::string head = "line " + std::to_string(c.line) + ": " + (c.must_fail ? "! " : "") + c.text;
    if (!c.comment.empty()) head += "    # " + c.comment;
    std::printf("%s\n", head.c_str());
  }

  // What the command did, in kernel words: the charge path's notes, what reclaim freed from
  // whom, the socket story, and how it ended (a refusal marked expected when written with `!`).
  void explain_outcome(const command& c, const outcome& r) {
    auto say = [](const std::string& s) { std::printf("    %s\n", s.c_str()); };
    const bool failed = std::any_of(tracer_.notes.begin(), tracer_.notes.end(),
                                    [](const auto& n) { return n.key == "nomem"; });
    for (const auto& n : tracer_.notes) {
      // A counter that took the pages before another refused gave them back: not a charge.
      if (failed && n.key == "charged") continue;
      // A socket's pages: the socket story says where they went.
      if (is_socket_command(c) && (n.key == "charged" || n.key == "nomem" || n.key.starts_with("sub:") ||
                                   n.key.starts_with("refused:")))
        continue;
      std::string t = n.text;
      if (n.key.starts_with("reclaim") || n.key.starts_with("high_reclaim"))
        t += n.count > 1 ? ": " + std::to_string(n.count) + " rounds asked " + pages_str(n.asked) +
                               " in all, freed " + pages_str(n.freed)
                         : ": asked " + pages_str(n.asked) + ", freed " + pages_str(n.freed);
      else if (n.count > 1)
        t += " (" + std::to_string(n.count) + " times)";
      say(t);
    }
    if (!reclaim_log_.empty()) {
      std::string t = "reclaimed from:";
      bool first = true;
      for (const auto& [path, kinds] : reclaim_log_)
        for (const auto& [k, pages] : kinds) {
          t += (first ? " " : ", ") + human(pages * memcg::page_size) + " of " +
               std::string(memcg::kind_name(k)) + " from " + path;
          first = false;
        }
      t += " (oldest pages first)";
      say(t);
    }
    for (const std::string& s : story_) say(s);
    if (r.ok) {
      if (story_.empty()) {
        std::string done = done_text(c);
        if (!done.empty()) say(done);
      }
      return;
    }
    if (r.refused && c.must_fail)
      say(std::string(c.name == "recv" ? "dropped" : "blocked") + ", as expected (the line starts with `!`)");
    else if (c.must_fail)
      say("refused, as expected (the line starts with `!`): " + r.error);
    else if (!r.refused)
      say("error: " + r.error + " -- not expected: memcg-sim will exit 1");
  }

  static bool is_socket_command(const command& c) {
    return c.name == "recv" || c.name == "send" || c.name == "consume" || c.name == "ack" ||
           c.name == "close" || c.name == "socket";
  }

  // A sentence for a command that succeeded without a charge-path step or socket story.
  std::string done_text(const command& c) {
    if (c.name == "mkdir")
      return "created group " + c.args[0] + " (no limits of its own: its ancestors' limits apply)";
    if (c.name == "rmdir")
      return "removed " + c.args[0] + ": its charges, statistics and pages now belong to its parent";
    if (c.name == "write" && !socket_file(c.args[1])) {
      outcome err;
      if (auto v = read_target(c.args[0], c.args[1], &err); v && !v->keyed && !v->entries.empty()) {
        const std::string& val = v->entries[0].second;
        auto b = parse_size(val);
        if (b && *b >= memcg::page_counter_max * memcg::page_size) return c.args[1] + " of " + c.args[0] + " is now unlimited";
        return c.args[1] + " of " + c.args[0] + " is now " +
               (b && *b >= 1024 ? human(*b) + " (" + std::to_string(*b / memcg::page_size) + " pages)" : val);
      }
      return "written";
    }
    if (c.name == "write") {
      outcome err;
      auto v = read_target(c.args[0], c.args[1], &err);
      return v ? c.args[1] + " of " + c.args[0] + " is now " + v->entries[0].second +
                     " bytes (SO_" + (c.args[1] == "sock.rcvbuf" ? "RCVBUF" : "SNDBUF") +
                     ": twice the value asked, locked)"
               : std::string();
    }
    if (c.name == "sysctl") {
      std::string v;
      for (std::size_t i = 1; i < c.args.size(); ++i) v += " " + c.args[i];
      return c.args[0] + " is now" + v;
    }
    if (c.name == "sleep")
      return "the virtual clock moved to " + clock_str(clock_.now_us() / memcg::usec_per_msec);
    return "";
  }

  static std::string clock_str(std::int64_t ms) {
    char b[32];
    if (ms % 1000 == 0) std::snprintf(b, sizeof b, "%llds", static_cast<long long>(ms / 1000));
    else std::snprintf(b, sizeof b, "%.3fs", static_cast<double>(ms) / 1000.0);
    return b;
  }

  // At the end: one table per group that is still there, and the protocol if sockets were used.
  void explain_table() {
    std::printf("\n== At the end\n");
    const std::vector<std::pair<const char*, const char*>> limits = {
        {"memory.max", "max"},   {"memory.high", "high"},
        {"memory.low", "low"},   {"memory.min", "min"},
        {"memory.kmem.limit_in_bytes", "kmem limit"},
        {"memory.kmem.tcp.limit_in_bytes", "tcp limit"},
        {"memory.soft_limit_in_bytes", "soft limit"}};
    auto value = [&](group& g, const std::string& file) {
      memcg::control_value v = memcg::read_control(h_, g, file);
      return v ? v : memcg::control_value{};
    };
    auto size = [](const std::string& v) {
      auto b = parse_size(v);
      return b ? human(*b) : v;
    };
    for (const std::string& p : seen_) {
      group* g = h_.find(p);
      if (!g) continue;
      std::printf("\ngroup %s\n", p.c_str());
      auto row = [](const char* name, const std::string& text) {
        std::printf("  %-16s %s\n", name, text.c_str());
      };
      row("memory.current", size(value(*g, "memory.current").entries.at(0).second) +
                                "  (peak " + size(value(*g, "memory.max_usage_in_bytes").entries.at(0).second) +
                                ", failcnt " + value(*g, "memory.failcnt").entries.at(0).second + ")");
      std::string lim;
      for (const auto& [file, name] : limits) {
        std::string v = value(*g, file).entries.at(0).second;
        auto b = parse_size(v);
        if (v == "max" || v == "0" || (b && *b >= memcg::page_counter_max * memcg::page_size)) continue;
        lim += (lim.empty() ? "" : ", ") + std::string(name) + " " + size(v);
      }
      row("limits", lim.empty() ? "none" : lim);
      auto sub = [&](const char* name, const char* usage, const char* failcnt) {
        std::string u = value(*g, usage).entries.at(0).second, f = value(*g, failcnt).entries.at(0).second;
        if (u != "0" || f != "0") row(name, "usage " + size(u) + ", failcnt " + f);
      };
      sub("kmem counter", "memory.kmem.usage_in_bytes", "memory.kmem.failcnt");
      sub("tcp counter", "memory.kmem.tcp.usage_in_bytes", "memory.kmem.tcp.failcnt");
      std::string st;
      for (const auto& [k, v] : value(*g, "memory.stat").entries) {
        if (v == "0" || k == "kernel" || k == "slab") continue;
        st += (st.empty() ? "" : ", ") + k + " " + size(v);
      }
      row("memory.stat", st.empty() ? "nothing charged" : st);
      std::string ev;
      for (const auto& [k, v] : value(*g, "memory.events").entries)
        if (v != "0") ev += (ev.empty() ? "" : ", ") + k + " " + v;
      row("memory.events", ev.empty() ? "none" : ev);
    }
    if (proto_.sockets_allocated() > 0 || proto_.memory_allocated() > 0 || !sockets_.empty()) {
      const memcg::tcp_mem_sysctl m = proto_.sysctl_mem();
      std::printf("\nprotocol tcp\n");
      std::printf("  %-16s %lld pages (tcp_mem %lld %lld %lld), %s\n", "memory_allocated",
                  static_cast<long long>(proto_.memory_allocated()), static_cast<long long>(m.min),
                  static_cast<long long>(m.pressure), static_cast<long long>(m.max),
                  proto_.under_memory_pressure() ? "under pressure" : "not under pressure");
      std::printf("  %-16s %lld open, %lld pressure episode%s\n", "sockets",
                  static_cast<long long>(proto_.sockets_allocated()),
                  static_cast<long long>(proto_.memory_pressures()),
                  proto_.memory_pressures() == 1 ? "" : "s");
    }
  }

  options opts_;
  std::string title_;
  memcg::virtual_clock clock_;     // the virtual clock: only throttling and `sleep` take time
  hierarchy h_;                    // after clock_: it reads the clock until destroyed
  proto proto_{proto_options(&clock_)};  // TCP: the kernel's defaults, no per-thread reserve
  std::map<std::string, std::unique_ptr<sock>> sockets_;  // after h_ and proto_: closed first
  tracer tracer_;
  std::map<group*, std::unique_ptr<page_cache>> caches_;
  std::vector<std::string> seen_;  // every group path ever made, in creation order (plot)
  std::vector<sample> samples_;
  std::uint64_t seq_ = 0;          // charge order of reclaimable pages
  int line_ = 0;
  std::string charged_in_;         // the group the current command charged in
  bool failed_ = false;
  // Per command: the group it concerned (a socket's), its socket marks, its story (--explain)
  // and what reclaim freed from whom.
  std::string concerned_;
  std::vector<std::pair<std::string, sock_event>> sock_events_;
  std::vector<std::string> story_;
  reclaim_log reclaim_log_;
  pressure_watch pressure_;
};

runner::runner(const options& o, std::string title)
    : s_(std::make_unique<runner_state>(o, std::move(title))) {}
runner::~runner() = default;
void runner::run(const command& c) { s_->run(c); }
int runner::exit_code() const { return s_->exit_code(); }
void runner::finish() { s_->finish(); }

}  // namespace sim
