// fuzz/scenario_fuzz.cpp: the fuzzer of memcg-sim's scenario language (docs/scenarios.md).
//
// An input is a scenario file. Every line goes through sim::parse_line() (which must answer a
// command, nothing or a syntax error: never crash, never hang); the pieces the runner shares
// with the parser (parse_size, parse_duration, parse_number, split_expect) get every token.
// When the whole file parses, as memcg-sim does, it runs through sim::runner on the
// single-thread policy and its virtual clock, unless a size in it is above 1 GiB (the
// simulated page cache holds real bookkeeping per charge: a fuzzer could exhaust memory
// legitimately). The runner's output is discarded.
//
// Built as a libFuzzer target with clang (MEMCG_BUILD_FUZZERS), and as a plain program that
// replays the seed corpus in every test build with the examples (fuzz/replay_main.cpp).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "sim.hpp"

namespace {

constexpr std::int64_t max_run_bytes = std::int64_t{1} << 30;
constexpr std::size_t max_run_commands = 200;

// Every token of a line through every lexical helper: each must answer a value or nothing.
void lex_all(const std::vector<std::string>& tokens) {
  for (const std::string& t : tokens) {
    (void)sim::parse_size(t, true);
    (void)sim::parse_size(t, false);
    (void)sim::parse_uint(t);
    (void)sim::parse_duration(t);
    (void)sim::parse_number(t);
    (void)sim::parse_op(t);
  }
  std::string err;
  (void)sim::split_expect(tokens, &err);
}

bool small_enough(const sim::command& c) {
  for (const std::string& a : c.args) {
    if (auto b = sim::parse_size(a, false); b && *b > max_run_bytes) return false;
    if (auto n = sim::parse_uint(a); n && *n > max_run_bytes) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = std::freopen("/dev/null", "w", stdout) != nullptr;
  (void)quiet;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<sim::command> commands;
  bool syntax_error = false, runnable = true;
  int line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, (nl == std::string_view::npos ? text.size() : nl) - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    sim::parsed_line p = sim::parse_line(line, ++line_no);
    if (!p.error.empty()) {
      syntax_error = true;
      if (p.cmd) std::abort();  // an error and a command at once: the contract is one or the other
      continue;
    }
    if (!p.cmd) continue;
    std::vector<std::string> tokens = p.cmd->args;
    tokens.insert(tokens.begin(), p.cmd->name);
    lex_all(tokens);
    runnable = runnable && small_enough(*p.cmd);
    commands.push_back(std::move(*p.cmd));
  }
  if (syntax_error || !runnable || commands.size() > max_run_commands) return 0;
  sim::runner r(sim::options{}, "fuzz");
  for (const sim::command& c : commands) r.run(c);
  r.finish();
  int code = r.exit_code();
  if (code != 0 && code != 1) std::abort();  // a scenario passes or fails, nothing else
  return 0;
}
