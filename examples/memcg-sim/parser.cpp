// memcg-sim: lexing and the syntax check of scenario lines (docs/scenarios.md, "Lexical rules"
// and "Syntax errors"). Nothing here touches the library's state: a file is
// checked completely before its first command runs.
#include <charconv>
#include <cstdlib>
#include <limits>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sim.hpp"

namespace sim {
namespace {

constexpr std::size_t max_line_length = 4096;

// A token as it appears in a message: quoted, cut if very long, non-printables escaped.
std::string quote(std::string_view s) {
  std::string out = "'";
  std::size_t n = 0;
  for (char c : s) {
    if (++n > 40) {
      out += "...";
      break;
    }
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "'";
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// A comment's text for --explain: without the blanks and extra `#`s around it.
std::string comment_text(std::string_view s) {
  while (!s.empty() && (s.front() == '#' || is_blank(s.front()))) s.remove_prefix(1);
  while (!s.empty() && (is_blank(s.back()) || s.back() == '\r')) s.remove_suffix(1);
  return std::string(s);
}

// ---- per-command syntax checks: return an error message, or "" ----

using check_fn = std::string (*)(const command&);

std::string check_size_arg(const std::string& s, bool allow_max) {
  if (parse_size(s, allow_max)) return "";
  // Tell "too large" apart from "malformed": digits only, but out of range.
  std::string_view d = s;
  if (!d.empty() && (d.back() == 'K' || d.back() == 'k' || d.back() == 'M' || d.back() == 'm' ||
                     d.back() == 'G' || d.back() == 'g' || d.back() == 'T' || d.back() == 't'))
    d.remove_suffix(1);
  bool digits = !d.empty() && d.find_first_not_of("0123456789") == std::string_view::npos;
  if (digits) return "SIZE " + quote(s) + " is above 2^63-1 bytes";
  return "malformed SIZE " + quote(s) + " (a non-negative integer with an optional K, M, G or T)";
}

std::string check_kind(const std::string& s) {
  if (memcg::parse_kind(s)) return "";
  return "unknown KIND " + quote(s) +
         " (anon, file, kmem, pagetables, slab_reclaimable, slab_unreclaimable, sock)";
}

std::string check_none(const command&) { return ""; }

std::string check_charge(const command& c) {
  if (auto e = check_kind(c.args[1]); !e.empty()) return e;
  if (auto e = check_size_arg(c.args[2], false); !e.empty()) return e;
  if (c.args.size() == 4 && c.args[3] != "nofail")
    return "unexpected " + quote(c.args[3]) + " (only `nofail` may follow the SIZE)";
  return "";
}

std::string check_uncharge(const command& c) {
  if (auto e = check_kind(c.args[1]); !e.empty()) return e;
  return check_size_arg(c.args[2], false);
}

std::string check_name_size(const command& c) { return check_size_arg(c.args[1], false); }

std::string check_sleep(const command& c) {
  if (parse_duration(c.args[0])) return "";
  return "bad DURATION " + quote(c.args[0]) + " (an integer with ms or s, e.g. 500ms)";
}

std::string check_sysctl(const command& c) {
  const std::string& name = c.args[0];
  auto want = [&](std::size_t n, const char* usage) -> std::string {
    if (c.args.size() != n + 1)
      return name + " takes " + std::to_string(n) + (n == 1 ? " value" : " values") +
             " (" + usage + ")";
    for (std::size_t i = 1; i < c.args.size(); ++i)
      if (!parse_uint(c.args[i])) return name + ": " + quote(c.args[i]) + " is not a number";
    return "";
  };
  if (name == "memcg.charge_batch") return want(1, "pages");
  if (name == "memcg.memory_recursiveprot") {
    if (auto e = want(1, "0 or 1"); !e.empty()) return e;
    if (c.args[1] != "0" && c.args[1] != "1") return name + " takes 0 or 1";
    return "";
  }
  if (name == "memcg.socket_accounting") {
    if (c.args.size() != 2 || (c.args[1] != "both" && c.args[1] != "v1" && c.args[1] != "v2"))
      return name + " takes both, v1 or v2";
    return "";
  }
  if (name == "net.ipv4.tcp_mem") return want(3, "MIN PRESSURE MAX in pages");
  if (name == "net.ipv4.tcp_rmem" || name == "net.ipv4.tcp_wmem")
    return want(3, "MIN DEFAULT MAX in bytes");
  return "unknown sysctl " + quote(name) +
         " (memcg.charge_batch, memcg.memory_recursiveprot, memcg.socket_accounting, "
         "net.ipv4.tcp_mem, net.ipv4.tcp_rmem, net.ipv4.tcp_wmem)";
}

std::string check_expect(const command& c) {
  std::string err;
  if (!split_expect(c.args, &err)) return err;
  return "";
}

// The command table for syntax: name, arity, usage, check. The run functions live in
// runner.cpp's table under the same names.
struct syntax_spec {
  std::string_view name;
  std::size_t min_args, max_args;
  std::string_view usage;
  check_fn check;
};
constexpr std::size_t many = 1 << 20;
const syntax_spec syntax_table[] = {
    {"mkdir", 1, 1, "mkdir PATH", check_none},
    {"rmdir", 1, 1, "rmdir PATH", check_none},
    {"write", 3, many, "write PATH FILE VALUE...", check_none},
    {"read", 2, 2, "read TARGET FILE", check_none},
    {"charge", 3, 4, "charge PATH KIND SIZE [nofail]", check_charge},
    {"uncharge", 3, 3, "uncharge PATH KIND SIZE", check_uncharge},
    {"sysctl", 1, many, "sysctl NAME VALUE...", check_sysctl},
    {"socket", 2, 2, "socket PATH NAME", check_none},
    {"recv", 2, 2, "recv NAME SIZE", check_name_size},
    {"consume", 2, 2, "consume NAME SIZE", check_name_size},
    {"send", 2, 2, "send NAME SIZE", check_name_size},
    {"ack", 2, 2, "ack NAME SIZE", check_name_size},
    {"close", 1, 1, "close NAME", check_none},
    {"sleep", 1, 1, "sleep DURATION", check_sleep},
    {"expect", 3, 6, "expect TARGET FILE [KEY] [OP] VALUE [TOLERANCE%]", check_expect},
};

parsed_line syntax_error(std::string message) {
  parsed_line p;
  p.error = std::move(message);
  return p;
}

}  // namespace

// ---- lexical helpers ----

std::optional<std::int64_t> parse_size(std::string_view s, bool allow_max) {
  return memcg::parse_bytes(s, memcg::size_syntax{.allow_max = allow_max, .allow_minus1 = false});
}

std::optional<std::int64_t> parse_uint(std::string_view s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<std::int64_t> parse_duration(std::string_view s) {
  std::int64_t scale = 0;
  if (s.ends_with("ms")) {
    s.remove_suffix(2);
    scale = 1;
  } else if (s.ends_with("s")) {
    s.remove_suffix(1);
    scale = 1000;
  } else {
    return std::nullopt;
  }
  auto v = parse_uint(s);
  if (!v || *v > INT64_MAX / scale) return std::nullopt;
  return *v * scale;
}

std::optional<double> parse_number(std::string_view s) {
  if (s == "max") return std::numeric_limits<double>::infinity();
  if (auto b = parse_size(s)) return static_cast<double>(*b);
  // Decimals (memory.pressure averages) and negative numbers.
  std::string_view d = s;
  if (!d.empty() && d.front() == '-') d.remove_prefix(1);
  std::size_t dot = d.find('.');
  std::string_view ip = d.substr(0, dot), fp = dot == std::string_view::npos ? "" : d.substr(dot + 1);
  auto all_digits = [](std::string_view x) {
    return x.find_first_not_of("0123456789") == std::string_view::npos;
  };
  if (ip.empty() || !all_digits(ip) || !all_digits(fp) || (dot != std::string_view::npos && fp.empty()))
    return std::nullopt;
  if (ip.size() > 30) return std::nullopt;
  // strtod, not from_chars: the wasm build's libc++ has no floating-point from_chars. The text
  // is checked above (digits, one dot), so only the "C" locale's decimal point matters.
  std::string text(s);
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return std::nullopt;
  return v;
}

std::optional<compare_op> parse_op(std::string_view s) {
  if (s == "==") return compare_op::eq;
  if (s == "!=") return compare_op::ne;
  if (s == "<") return compare_op::lt;
  if (s == "<=") return compare_op::le;
  if (s == ">") return compare_op::gt;
  if (s == ">=") return compare_op::ge;
  return std::nullopt;
}

// expect TARGET FILE [KEY] [OP] VALUE [TOLERANCE%]
std::optional<expectation> split_expect(const std::vector<std::string>& args, std::string* error) {
  auto fail = [&](std::string m) -> std::optional<expectation> {
    *error = std::move(m);
    return std::nullopt;
  };
  if (args.size() < 3) return fail("expect needs a VALUE (expect TARGET FILE [KEY] [OP] VALUE [TOLERANCE%])");
  expectation e;
  e.target = args[0];
  e.file = args[1];
  std::vector<std::string> rest(args.begin() + 2, args.end());
  if (rest.size() >= 2 && rest.back().ends_with('%')) {
    std::string_view t = rest.back();
    t.remove_suffix(1);
    auto v = parse_number(t);
    if (!v || t.front() == '-' || t == "max") return fail("malformed TOLERANCE " + quote(rest.back()));
    e.tolerance_percent = *v;
    rest.pop_back();
  }
  // An operator-looking token that is not an operator is an unknown OP, not a KEY or VALUE.
  auto looks_like_op = [](const std::string& s) {
    return !s.empty() && s.find_first_not_of("=!<>~") == std::string::npos;
  };
  std::string op_token;
  if (rest.size() == 1) {
    e.value = rest[0];
  } else if (rest.size() == 2) {
    if (looks_like_op(rest[0])) op_token = rest[0];
    else e.key = rest[0];
    e.value = rest[1];
  } else if (rest.size() == 3) {
    e.key = rest[0];
    op_token = rest[1];
    e.value = rest[2];
    if (!looks_like_op(op_token) && !parse_op(op_token))
      return fail("expected an OP (==, !=, <, <=, >, >=) before the VALUE, got " + quote(op_token));
  } else {
    return fail(rest.empty() ? "expect needs a VALUE"
                             : "too many arguments (expect TARGET FILE [KEY] [OP] VALUE [TOLERANCE%])");
  }
  if (!op_token.empty()) {
    auto op = parse_op(op_token);
    if (!op) return fail("unknown OP " + quote(op_token) + " (==, !=, <, <=, >, >=)");
    e.op = *op;
  }
  if (looks_like_op(e.value)) return fail("expect needs a VALUE after " + quote(e.value));
  if (e.tolerance_percent && e.op != compare_op::eq)
    return fail("a TOLERANCE is allowed only with ==");
  // A VALUE that starts like a number must be one: a SIZE, an integer or a decimal.
  char f = e.value.empty() ? 'x' : e.value.front();
  if ((f >= '0' && f <= '9') || f == '-') {
    if (!parse_number(e.value)) {
      std::string m = check_size_arg(e.value, false);
      return fail(m.empty() ? "malformed VALUE " + quote(e.value) : m);
    }
  }
  return e;
}

parsed_line parse_line(std::string_view line, int line_no) {
  parsed_line out;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // CRLF files
  if (line.size() > max_line_length)
    return syntax_error("line too long (" + std::to_string(line.size()) + " characters, at most " +
                              std::to_string(max_line_length) + ")");
  if (std::size_t hash = line.find('#'); hash != std::string_view::npos) {
    out.comment = comment_text(line.substr(hash + 1));
    out.comment_column = hash;
    line = line.substr(0, hash);
  }
  for (char c : line) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f)
      return syntax_error("not a text line (control byte " + quote(std::string(1, c)) + ")");
  }
  // Tokens, and the text from the first to the last token as written.
  std::vector<std::string> tokens;
  std::size_t first = std::string_view::npos, last = 0;
  for (std::size_t i = 0; i < line.size();) {
    if (is_blank(line[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < line.size() && !is_blank(line[j])) ++j;
    if (first == std::string_view::npos) first = i;
    last = j;
    tokens.emplace_back(line.substr(i, j - i));
    i = j;
  }
  if (tokens.empty()) return out;

  command c;
  c.line = line_no;
  c.comment = out.comment;
  std::size_t start = first;
  std::size_t t = 0;
  if (tokens[0] == "!" || tokens[0].starts_with('!')) {
    c.must_fail = true;
    // `!charge` and `! charge` alike: drop the `!` and the blanks after it.
    if (tokens[0] == "!") {
      t = 1;
    } else {
      tokens[0].erase(0, 1);
    }
    start = first + 1;
    while (start < last && is_blank(line[start])) ++start;
    if (t >= tokens.size()) return syntax_error("`!` needs a COMMAND after it");
    if (tokens[t] == "!" || tokens[t].starts_with('!')) return syntax_error("`!` before `!`");
    if (tokens[t] == "expect") return syntax_error("`!` before `expect` (write the opposite OP instead)");
  }
  c.text = std::string(line.substr(start, last - start));
  c.name = tokens[t];
  c.args.assign(tokens.begin() + static_cast<std::ptrdiff_t>(t) + 1, tokens.end());

  const syntax_spec* spec = nullptr;
  for (const auto& s : syntax_table)
    if (s.name == c.name) spec = &s;
  if (!spec) return syntax_error("unknown command " + quote(c.name));
  if (c.args.size() < spec->min_args || c.args.size() > spec->max_args) {
    if (c.name == "expect" && c.args.size() == 2)
      return syntax_error("expect needs a VALUE (" + std::string(spec->usage) + ")");
    return syntax_error("wrong number of arguments: " + std::to_string(c.args.size()) + " for " +
                              std::string(spec->usage));
  }
  if (std::string e = spec->check(c); !e.empty()) return syntax_error(c.name + ": " + e);
  if (c.name == "expect") {
    std::size_t after = c.text.find("expect") + 6;
    while (after < c.text.size() && is_blank(c.text[after])) ++after;
    c.expect_args = c.text.substr(after);
  }
  out.cmd = std::move(c);
  return out;
}

}  // namespace sim
