// memcg-sim: runs scenario files (docs/scenarios.md) against the memcg library with the deterministic
// single-thread policy and a virtual clock.
//
//   memcg-sim [--trace] [--explain] [--plot FILE.svg] FILE...   check each file, then run it;
//                                                                fresh state each
//   memcg-sim [--trace] [--explain] -                            a REPL: each stdin line runs as
//                                                                it comes
//
// Exit: 0 every expectation held, 1 a command or expectation failed, 2 a syntax error or an
// unreadable file; with several files, the worst.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "sim.hpp"

namespace {

constexpr int max_syntax_errors = 50;

// --explain's narrative: a comment line at the start of a line (or after a blank line) is a
// heading of the next command; an indented one right after a command (or after such a line)
// continues that command's comment; `# exit: N` and `# args: ...` are test metadata.
class comment_collector {
 public:
  void take(sim::parsed_line& p, std::vector<sim::command>& commands) {
    if (p.cmd) {
      p.cmd->heading = std::move(heading_);
      heading_.clear();
      commands.push_back(std::move(*p.cmd));
      continues_ = true;
      return;
    }
    if (!p.error.empty() || p.comment.empty()) {
      continues_ = false;  // a blank line ends a paragraph and a command's comment
      if (!heading_.empty() && !heading_.back().empty() && p.error.empty()) heading_.emplace_back();
      return;
    }
    if (continues_ && p.comment_column > 0 && !commands.empty()) {
      std::string& c = commands.back().comment;
      c += (c.empty() ? "" : " ") + p.comment;
      return;
    }
    continues_ = false;
    if (p.comment.starts_with("exit:") || p.comment.starts_with("args:")) return;  // test metadata
    heading_.push_back(p.comment);
  }
 private:
  std::vector<std::string> heading_;
  bool continues_ = false;
};

void usage(std::FILE* to) {
  std::fputs(
      "usage: memcg-sim [--trace] [--explain] [--plot FILE.svg] SCENARIO...\n"
      "       memcg-sim [--trace] [--explain] -   (read commands from standard input)\n"
      "  --trace        every step of every charge, reclaim and socket operation\n"
      "                 (lines `  trace: ...`)\n"
      "  --explain      tell the scenario's story: its comments as headings, what each command\n"
      "                 did in kernel words, and a table of every group at the end\n"
      "  --plot FILE    write an SVG timeline of memory.current, limits and events\n"
      "                 (with several scenarios: FILE-1.svg, FILE-2.svg, ...)\n",
      to);
}

// The plot file for scenario i of n: FILE.svg, or FILE-i.svg when several run.
std::string plot_path(const std::string& plot, std::size_t i, std::size_t n) {
  if (plot.empty() || n == 1) return plot;
  std::string base = plot, ext;
  if (std::size_t dot = plot.rfind('.'); dot != std::string::npos && plot.find('/', dot) == std::string::npos) {
    base = plot.substr(0, dot);
    ext = plot.substr(dot);
  }
  return base + "-" + std::to_string(i + 1) + ext;
}

int run_file(const std::string& file, const sim::options& opts) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) {
    std::fprintf(stderr, "memcg-sim: cannot read %s: it is a directory\n", file.c_str());
    return 2;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "memcg-sim: cannot open %s: %s\n", file.c_str(), std::strerror(errno));
    return 2;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    std::fprintf(stderr, "memcg-sim: cannot read %s\n", file.c_str());
    return 2;
  }
  std::string text = buf.str();

  // Check every line before the first one runs (docs/scenarios.md, "Syntax errors": a syntax
  // error stops the run before anything happens).
  std::vector<sim::command> commands;
  comment_collector comments;
  int errors = 0, line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++line_no;
    sim::parsed_line p = sim::parse_line(line, line_no);
    if (!p.error.empty()) {
      if (++errors <= max_syntax_errors)
        std::printf("%s:%d: %s\n", file.c_str(), line_no, p.error.c_str());
      continue;
    }
    comments.take(p, commands);  // comments after the last command head nothing: dropped
  }
  if (errors > max_syntax_errors)
    std::printf("%s: %d more syntax errors not shown\n", file.c_str(), errors - max_syntax_errors);
  if (errors) return 2;

  std::string title = file;
  if (std::size_t slash = title.rfind('/'); slash != std::string::npos) title = title.substr(slash + 1);
  sim::runner r(opts, title);
  for (const sim::command& c : commands) r.run(c);
  r.finish();
  return r.exit_code();
}

int run_stdin(const sim::options& opts) {
  sim::runner r(opts, "standard input");
  bool syntax_error = false;
  std::string line;
  std::vector<std::string> heading;  // comment lines since the last command
  for (int line_no = 1; std::getline(std::cin, line); ++line_no) {
    sim::parsed_line p = sim::parse_line(line, line_no);
    if (!p.error.empty()) {
      std::printf("-:%d: %s\n", line_no, p.error.c_str());
      syntax_error = true;  // the session goes on; the exit code is as for a file
    } else if (p.cmd) {
      p.cmd->heading = std::move(heading);
      heading.clear();
      r.run(*p.cmd);
    } else if (!p.comment.empty()) {
      heading.push_back(p.comment);
    }
    std::fflush(stdout);
  }
  r.finish();
  return syntax_error ? 2 : r.exit_code();
}

}  // namespace

int main(int argc, char** argv) {
  sim::options opts;
  std::vector<std::string> files;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!options_done && a == "--") {
      options_done = true;
    } else if (!options_done && a == "--trace") {
      opts.trace = true;
    } else if (!options_done && a == "--explain") {
      opts.explain = true;
    } else if (!options_done && (a == "--plot" || a.starts_with("--plot="))) {
      if (a == "--plot") {
        if (i + 1 >= argc) {
          std::fputs("memcg-sim: --plot needs a FILE\n", stderr);
          return 2;
        }
        opts.plot = argv[++i];
      } else {
        opts.plot = a.substr(7);
      }
      if (opts.plot.empty()) {
        std::fputs("memcg-sim: --plot needs a FILE\n", stderr);
        return 2;
      }
    } else if (!options_done && (a == "-h" || a == "--help")) {
      usage(stdout);
      return 0;
    } else if (!options_done && a.size() > 1 && a[0] == '-') {
      std::fprintf(stderr, "memcg-sim: unknown option %s\n", a.c_str());
      usage(stderr);
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) {
    usage(stderr);
    return 2;
  }

  int worst = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    sim::options o = opts;
    o.plot = plot_path(opts.plot, i, files.size());
    int code = files[i] == "-" ? run_stdin(o) : run_file(files[i], o);
    worst = std::max(worst, code);
    std::fflush(stdout);
  }
  return worst;
}
