// memcg-sim: the scenario runner (docs/scenarios.md is the contract).
//
// Contents:
//   command          one parsed line: name, arguments, the text as written
//   parse_line()     lexing and the full syntax check of one line (parser.cpp)
//   command_spec     the command table: arity, syntax check, run function (runner.cpp)
//   sample, plot     what --plot records after each command, and the SVG writer (plot.cpp)
//   runner           the state of one scenario: hierarchy, page caches, clock, exit status
//
// Flow: main.cpp reads a file, parses every line (syntax errors stop the run with exit 2), then
// hands the commands to a runner one by one. With `-` it parses and runs line by line.
#pragma once

#include <cstdint>
#include <utility>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"

namespace sim {

using policy = memcg::sync::single_thread;
using hierarchy = memcg::basic_hierarchy<policy>;
using group = memcg::basic_group<policy>;

// One command line after lexing and the syntax check.
struct command {
  int line = 0;
  bool must_fail = false;          // written with a leading `!`
  std::string text;                // the line as written, without `!`, comment and outer blanks
  std::string name;                // "charge"
  std::vector<std::string> args;   // the tokens after the name
  std::string expect_args;         // expect: the text after `expect`, as written
  // --explain only: the comment after the command (and its indented continuation lines), and
  // the comment lines before it since the previous command (the scenario's narrative).
  std::string comment;
  std::vector<std::string> heading;
};

// The result of parsing one line: nothing (blank or comment), a command, or a syntax error.
struct parsed_line {
  std::optional<command> cmd;
  std::string error;  // non-empty: a syntax error message
  std::string comment;             // the text after `#`, trimmed ("" if none or empty)
  std::size_t comment_column = 0;  // where the `#` is (a comment line indented: a continuation)
};
parsed_line parse_line(std::string_view line, int line_no);

// ---- lexical helpers shared by parser and runner ----

// SIZE in bytes (K/M/G/T suffixes, no fractions), or nullopt. `max` only if allow_max.
std::optional<std::int64_t> parse_size(std::string_view s, bool allow_max = false);
// A plain non-negative decimal integer.
std::optional<std::int64_t> parse_uint(std::string_view s);
// DURATION in milliseconds: an integer with `ms` or `s`.
std::optional<std::int64_t> parse_duration(std::string_view s);
// A number for comparisons: a SIZE (bytes), an integer or a decimal; `max` is +infinity.
std::optional<double> parse_number(std::string_view s);

enum class compare_op { eq, ne, lt, le, gt, ge };
std::optional<compare_op> parse_op(std::string_view s);
// An `expect` line split into its parts (the syntax check guarantees it is well formed).
struct expectation {
  std::string target, file, key;  // key empty for a one-value file
  compare_op op = compare_op::eq;
  std::string value;
  std::optional<double> tolerance_percent;
};
// Splits the arguments of `expect`; returns an error message on malformed input.
std::optional<expectation> split_expect(const std::vector<std::string>& args, std::string* error);

// ---- plot ----

struct kind_sample {
  std::int64_t bytes[memcg::nr_kinds] = {};
};
struct group_sample {
  bool alive = false;
  std::int64_t current = 0, max = 0, high = 0;  // bytes; limits INT64_MAX when unlimited
  std::int64_t kmem_max = 0, tcp_max = 0;       // the v1 sub-limits, bytes, INT64_MAX: none
  kind_sample stat;                             // hierarchical, per kind
  std::int64_t ev_max = 0, ev_oom = 0, ev_high = 0;  // memory.events.local counts
};
// The protocol (TCP) after a command: tcp.memory_allocated against net.ipv4.tcp_mem, pages.
struct tcp_sample {
  std::int64_t allocated = 0, min = 0, pressure = 0, max = 0;
  bool under_pressure = false;
  std::int64_t sockets = 0;
};
// What a socket command did, for a mark in its group's panel.
enum class sock_event : std::uint8_t { drop, block, forced, pressure_on, pressure_off };
struct sample {
  int line = 0;
  std::string label;  // the command, for tooltips
  std::vector<std::pair<std::string, group_sample>> groups;  // creation order
  bool failed = false;
  bool failure_expected = false;  // failed, and written with `!`
  std::string concerned;          // the group a failed command addressed ("-": the protocol)
  std::string throttled;  // a group path, if the command was throttled
  std::int64_t clock_ms = 0;      // the virtual clock after the command
  tcp_sample tcp;
  std::vector<std::pair<std::string, sock_event>> sock_events;  // group path ("-": protocol)
};
// An SVG timeline of `samples`; write_plot() puts it in a file (false if it cannot).
std::string plot_svg(const std::string& title, const std::vector<sample>& samples);
bool write_plot(const std::string& path, const std::string& title,
                const std::vector<sample>& samples);

// ---- the runner ----

struct options {
  bool trace = false;
  bool explain = false;  // the narrative mode (docs/scenarios.md, "--explain")
  std::string plot;  // empty: no plot
};

class runner_state;

class runner {
 public:
  explicit runner(const options& o, std::string title);
  ~runner();
  runner(const runner&) = delete;
  runner& operator=(const runner&) = delete;

  void run(const command& c);
  // 0: every expectation held and every command succeeded as expected; 1 otherwise.
  int exit_code() const;
  // Writes the plot if one was asked for; prints a message to stderr on failure.
  void finish();

 private:
  std::unique_ptr<runner_state> s_;
};

}  // namespace sim
