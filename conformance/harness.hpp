// The conformance harness's plumbing: real memory cgroups, workload agents that run inside them,
// memcg-sim driven through its REPL, and the table of rows. Kept free of the library on purpose:
// the harness compares the kernel with whatever memcg-sim the tree builds.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace conf {

inline constexpr long long kib = 1024;
inline constexpr long long mib = 1024 * 1024;
inline constexpr long long page = 4096;
// What the kernel prints for an unlimited page counter (PAGE_COUNTER_MAX pages, in bytes).
inline constexpr long long unlimited = 9223372036854771712LL;

// ---- files
std::optional<std::string> slurp(const std::string& path);
int put(const std::string& path, const std::string& value);  // 0 or the errno of the write
std::string errno_name(int e);

void msleep(int ms);

// ---- the cgroup environment
struct env {
  bool v2 = false;
  std::string own;     // our own memory cgroup directory
  std::string base;    // own/PREFIX-PID: everything the harness makes lives below it
  std::string workdir; // a directory on a real disk file system for the page-cache files
};
// Finds our memory cgroup, removes stale PREFIX-* groups of dead runs, makes base. On failure
// returns nullopt and sets why (the caller skips).
std::optional<env> setup_env(const std::string& prefix, const std::string& workdir, std::string& why);
extern env E;

struct group {
  std::string rel;  // below E.base
  std::string dir;
  std::string file(const std::string& v1name) const;  // the v1 name mapped to this host's file
  long long get(const std::string& v1name) const;     // -1 when unreadable
  int set(const std::string& v1name, const std::string& value) const;  // 0 or errno
  std::map<std::string, long long> keyed(const std::string& v1name) const;
};
group mkgroup(const std::string& rel);  // throws std::runtime_error
void cleanup() noexcept;
int group_mark() noexcept;                   // how many groups exist now
void remove_groups_since(int mark) noexcept;  // kills agents, removes the groups made after mark                // kills agents, removes every group made (reverse order)
void install_signal_cleanup();

// ---- agents: forked children that join a group and run workload commands
struct agent {
  pid_t pid = -1;
  int fd = -1;
  std::string buffered;
  // One command line, one reply line ("ok ..." / "err ..."); nullopt when the agent died.
  std::optional<std::string> call(const std::string& cmd);
  int reap();  // waits for the agent to end, returns the wait status
  void stop(); // asks it to exit and reaps it
};
struct agent_setup {
  long long anon_reserve = 0;  // bytes of anonymous memory mapped, page tables made (read-touched)
  long long buffer = 0;        // a touched write buffer
};
// Forks an agent, lets it prepare (before joining, so its setup is charged to our own group),
// moves it into g and returns it. Throws std::runtime_error.
agent spawn(const group& g, const agent_setup& s);

// ---- memcg-sim through its REPL
struct sim {
  std::string name;        // the transcript's name: build/.../conformance/NAME.scn
  std::vector<std::string> transcript;
  std::vector<std::string> syntax_errors;
  std::vector<std::string> errors;  // run-time `error:` lines
  std::vector<std::string> events;  // drop/block/throttle lines
  bool dead = false;

  explicit sim(std::string n);
  ~sim();
  sim(const sim&) = delete;
  sim& operator=(const sim&) = delete;
  // Runs the commands; returns the output lines they printed (reads, errors, drops...).
  std::vector<std::string> run(const std::vector<std::string>& cmds);
  std::vector<std::string> run1(const std::string& cmd) { return run({cmd}); }
  // `read TARGET FILE` (and KEY of a keyed file); nullopt if the read failed.
  std::optional<long long> read(const std::string& target, const std::string& file,
                                const std::string& key = "");
  // Did the output of one run contain an `error:` / `drop` / `block` line?
  static bool has(const std::vector<std::string>& out, const std::string& what);
  void save(const std::string& dir) const;

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buf_;
  int line_ = 0;
  std::optional<std::string> getline_();
};
void set_sim_path(const std::string& p);
void set_transcript_dir(const std::string& d);

// ---- the table
struct row {
  std::string what, kernel, ours, tolerance;
  bool agree = false;
  std::string note;
};
extern std::vector<row> rows;
std::string fmt(long long v);
void add_abs(const std::string& what, std::optional<long long> k, std::optional<long long> o,
             long long tol, const std::string& note = "");
void add_rel(const std::string& what, std::optional<long long> k, std::optional<long long> o,
             double pct, const std::string& note = "");
void add_same(const std::string& what, const std::string& k, const std::string& o,
              const std::string& note = "");
// A deliberate divergence: holds when the kernel shows its behaviour and we show ours.
void add_divergence(const std::string& what, const std::string& k, const std::string& o,
                    bool kernel_as_listed, bool ours_as_listed, const std::string& note = "");
void print_table();

}  // namespace conf
