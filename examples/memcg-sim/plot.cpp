// memcg-sim --plot: an SVG timeline of a scenario. One panel per group (the root and the
// top-level groups when there are many), x = the commands in order, y = MiB:
//   stacked columns   the group's memory by kind (memory.stat, hierarchical)
//   black line        memory.current (also counts pages pre-charged in the stock)
//   dashed lines      memory.max (red), memory.high (orange), the kmem and tcp sub-limits
//                     (in their kinds' colours) where set
//   marks             max / oom / high events, throttles; failed commands (filled) and expected
//                     refusals (hollow) in the panel of the group the command addressed only;
//                     socket drops, blocks, forced segments and pressure in the socket's group
// and, when the scenario used sockets, a panel of tcp.memory_allocated (pages) against
// net.ipv4.tcp_mem's min, pressure and max, with the protocol's pressure entered and left.
// The x axis names each command's scenario line and, where the virtual clock moved, the time.
// Each panel is <g class="panel" data-group="PATH"> (data-group "-" for the protocol).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sim.hpp"

namespace sim {
namespace {

constexpr double mib = 1024.0 * 1024.0;

struct layer {
  const char* name;
  const char* color;
  std::vector<memcg::kind> kinds;
};
const std::vector<layer>& layers() {
  using memcg::kind;
  static const std::vector<layer> l = {
      {"anon", "#4e79a7", {kind::anon}},
      {"file (page cache)", "#8cd17d", {kind::file}},
      {"slab_reclaimable", "#b6992d", {kind::slab_reclaimable}},
      {"kmem, pagetables, slab_unrecl.", "#e15759",
       {kind::kmem, kind::pagetables, kind::slab_unreclaimable}},
      {"sock", "#b07aa1", {kind::sock}},
  };
  return l;
}

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default:
        if (static_cast<unsigned char>(c) >= 0x20) o += c;
    }
  }
  return o;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// A round axis maximum in MiB and its tick step.
void nice_axis(double max_mib, double* top, double* step) {
  if (max_mib <= 0) max_mib = 1;
  double raw = max_mib / 5;
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / p;
  *step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  *top = std::ceil(max_mib / *step) * *step;
}

std::string unit_label(double v, const char* unit) {
  char b[32];
  if (v == std::floor(v)) std::snprintf(b, sizeof b, "%.0f %s", v, unit);
  else std::snprintf(b, sizeof b, "%.1f %s", v, unit);
  return b;
}

}  // namespace

// The shown panel a group's marks go to: the group, else its nearest shown ancestor, else "/".
std::string panel_of(std::string p, const std::vector<std::string>& shown) {
  if (p == "-") return p;
  while (true) {
    if (std::find(shown.begin(), shown.end(), p) != shown.end()) return p;
    std::size_t slash = p.rfind('/');
    if (slash == std::string::npos || p == "/") return "/";
    p = p.substr(0, slash);
  }
}

std::string time_label(std::int64_t ms) {
  char b[32];
  if (ms % 1000 == 0) std::snprintf(b, sizeof b, "%llds", static_cast<long long>(ms / 1000));
  else if (ms < 10000) std::snprintf(b, sizeof b, "%.2fs", static_cast<double>(ms) / 1000.0);
  else std::snprintf(b, sizeof b, "%.1fs", static_cast<double>(ms) / 1000.0);
  return b;
}

// A socket mark: drop (down triangle), block (bar), forced (diamond), pressure on / off.
std::string sock_mark(sock_event e, double cx, double y, const std::string& tip) {
  std::ostringstream o;
  switch (e) {
    case sock_event::drop:
      o << "<path class=\"mark-drop\" d=\"M" << num(cx - 5) << "," << num(y - 5) << " l10,0 l-5,9 z\" fill=\"#b07aa1\" stroke=\"white\">";
      break;
    case sock_event::block:
      o << "<rect class=\"mark-block\" x=\"" << num(cx - 5) << "\" y=\"" << num(y - 4) << "\" width=\"10\" height=\"5\" fill=\"#555\" stroke=\"white\">";
      break;
    case sock_event::forced:
      o << "<path class=\"mark-forced\" d=\"M" << num(cx) << "," << num(y - 6) << " l5,5 l-5,5 l-5,-5 z\" fill=\"#e15759\" stroke=\"white\">";
      break;
    case sock_event::pressure_on:
    case sock_event::pressure_off:
      o << "<text class=\"mark-pressure\" x=\"" << num(cx) << "\" y=\"" << num(y + 4)
        << "\" text-anchor=\"middle\" font-weight=\"bold\" fill=\"#b07aa1\">"
        << (e == sock_event::pressure_on ? "P+" : "P-");
      break;
  }
  o << "<title>" << esc(tip) << "</title>";
  o << (e == sock_event::block ? "</rect>" : e == sock_event::drop || e == sock_event::forced ? "</path>" : "</text>");
  o << "\n";
  return o.str();
}

const char* sock_event_name(sock_event e) {
  switch (e) {
    case sock_event::drop: return "dropped";
    case sock_event::block: return "blocked";
    case sock_event::forced: return "forced past the limit";
    case sock_event::pressure_on: return "socket pressure entered";
    case sock_event::pressure_off: return "socket pressure left";
  }
  return "";
}

bool write_plot(const std::string& path, const std::string& title, const std::vector<sample>& samples) {
  if (samples.empty()) return false;
  std::ofstream f(path);
  f << plot_svg(title, samples);
  return static_cast<bool>(f);
}

std::string plot_svg(const std::string& title, const std::vector<sample>& samples) {
  if (samples.empty()) return "";
  // Which groups get a panel: all of them if few, else the root and the top-level groups.
  std::vector<std::string> shown;
  for (const auto& [p, g] : samples.back().groups) shown.push_back(p);
  if (shown.size() > 6) {
    std::vector<std::string> top;
    for (const auto& p : shown)
      if (p == "/" || p.find('/') == std::string::npos) top.push_back(p);
    shown = top;
  }
  if (shown.size() > 8) shown.resize(8);
  bool sockets = false;
  for (const sample& sm : samples) sockets = sockets || sm.tcp.sockets > 0 || sm.tcp.allocated > 0;
  const std::size_t panels = shown.size() + (sockets ? 1 : 0);

  const double left = 80, right_legend = 260, plot_w = 760, panel_h = 190, gap = 75, top_margin = 85;
  const double width = left + plot_w + right_legend;
  const double height = std::max(top_margin + panels * (panel_h + gap) + 10, 600.0);
  const std::size_t n = samples.size();
  const double col = plot_w / static_cast<double>(n);
  auto x_of = [&](std::size_t i) { return left + col * static_cast<double>(i); };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << left << "\" y=\"28\" font-size=\"18\" font-weight=\"bold\">memcg-sim: "
    << esc(title) << "</text>\n";
  o << "<text x=\"" << left << "\" y=\"48\" fill=\"#555\">memory of each group after every command "
       "(stacked by kind), with its limits and events</text>\n";

  // Legend (right column).
  {
    double lx = left + plot_w + 20, ly = top_margin + 10;
    o << "<text x=\"" << lx << "\" y=\"" << ly << "\" font-weight=\"bold\">legend</text>\n";
    ly += 18;
    for (const layer& l : layers()) {
      o << "<rect x=\"" << lx << "\" y=\"" << ly - 10 << "\" width=\"12\" height=\"12\" fill=\""
        << l.color << "\"/><text x=\"" << lx + 18 << "\" y=\"" << ly << "\">" << esc(l.name)
        << "</text>\n";
      ly += 18;
    }
    auto line_key = [&](const char* color, const char* dash, const char* label) {
      o << "<line x1=\"" << lx << "\" y1=\"" << ly - 4 << "\" x2=\"" << lx + 12 << "\" y2=\"" << ly - 4
        << "\" stroke=\"" << color << "\" stroke-width=\"2\"" << dash << "/><text x=\"" << lx + 18
        << "\" y=\"" << ly << "\">" << label << "</text>\n";
      ly += 18;
    };
    line_key("black", "", "memory.current (with stock)");
    line_key("#d62728", " stroke-dasharray=\"6,3\"", "memory.max");
    line_key("#ff7f0e", " stroke-dasharray=\"2,2\"", "memory.high");
    line_key("#e15759", " stroke-dasharray=\"8,2,2,2\"", "kmem limit (v1)");
    line_key("#b07aa1", " stroke-dasharray=\"8,2,2,2\"", "tcp limit (v1)");
    auto mark_key = [&](const std::string& shape, const char* label) {
      o << shape << "<text x=\"" << lx + 18 << "\" y=\"" << ly << "\">" << label << "</text>\n";
      ly += 18;
    };
    mark_key("<path d=\"M" + num(lx) + "," + num(ly) + " l6,-10 l6,10 z\" fill=\"#d62728\"/>",
             "max event (hit memory.max)");
    mark_key("<circle cx=\"" + num(lx + 6) + "\" cy=\"" + num(ly - 4) + "\" r=\"5\" fill=\"#ff7f0e\"/>",
             "high event");
    mark_key("<text x=\"" + num(lx) + "\" y=\"" + num(ly) + "\" font-weight=\"bold\">✕</text>",
             "oom event");
    mark_key("<text x=\"" + num(lx) + "\" y=\"" + num(ly) + "\" fill=\"#9467bd\" font-weight=\"bold\">T</text>",
             "throttled (memory.high)");
    mark_key("<rect x=\"" + num(lx + 2) + "\" y=\"" + num(ly - 9) + "\" width=\"8\" height=\"8\" fill=\"#d62728\"/>",
             "failed command");
    mark_key("<rect x=\"" + num(lx + 2) + "\" y=\"" + num(ly - 9) +
                 "\" width=\"8\" height=\"8\" fill=\"white\" stroke=\"#d62728\" stroke-width=\"1.5\"/>",
             "refused, as expected (!)");
    mark_key(sock_mark(sock_event::drop, lx + 6, ly - 4, ""), "segment dropped");
    mark_key(sock_mark(sock_event::block, lx + 6, ly - 4, ""), "send blocked");
    mark_key(sock_mark(sock_event::forced, lx + 6, ly - 4, ""), "forced past a limit");
    mark_key(sock_mark(sock_event::pressure_on, lx + 6, ly - 4, ""), "socket pressure on / off");
    if (sockets) {
      ly += 8;
      line_key("#b07aa1", "", "tcp.memory_allocated");
      line_key("#2ca02c", " stroke-dasharray=\"4,3\"", "tcp_mem min");
      line_key("#ff7f0e", " stroke-dasharray=\"4,3\"", "tcp_mem pressure");
      line_key("#d62728", " stroke-dasharray=\"4,3\"", "tcp_mem max");
    }
  }
  // Which panel each command's failure mark goes to.
  std::vector<std::string> mark_panel(n);
  for (std::size_t i = 0; i < n; ++i) mark_panel[i] = panel_of(samples[i].concerned.empty() ? "/" : samples[i].concerned, shown);
  // The x axis under a panel: the scenario line of every few commands, and the time where the
  // clock moved.
  auto x_axis = [&](double bottom) {
    std::size_t every = std::max<std::size_t>(1, n / 12);
    for (std::size_t i = 0; i < n; i += every) {
      o << "<text x=\"" << num(x_of(i) + col / 2) << "\" y=\"" << bottom + 18
        << "\" text-anchor=\"middle\" fill=\"#444\" font-size=\"10\">"
        << (i == 0 ? std::string("start") : "l." + std::to_string(samples[i].line)) << "</text>\n";
    }
    double last_x = -1e9;
    for (std::size_t i = 1; i < n; ++i) {
      if (samples[i].clock_ms == samples[i - 1].clock_ms) continue;
      double cx = x_of(i) + col / 2;
      o << "<line x1=\"" << num(cx) << "\" y1=\"" << bottom << "\" x2=\"" << num(cx) << "\" y2=\"" << bottom + 24
        << "\" stroke=\"#1f77b4\"/>";
      if (cx - last_x >= 36) {
        o << "<text x=\"" << num(cx) << "\" y=\"" << bottom + 34 << "\" text-anchor=\"middle\" fill=\"#1f77b4\" font-size=\"10\">t="
          << time_label(samples[i].clock_ms) << "<title>line " << samples[i].line << ": the clock is at "
          << time_label(samples[i].clock_ms) << "</title></text>";
        last_x = cx;
      }
      o << "\n";
    }
    o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << bottom + 50
      << "\" text-anchor=\"middle\" fill=\"#444\">command (scenario line)"
      << (samples.back().clock_ms > 0 ? "; blue: virtual time where the clock moved" : "") << "</text>\n";
  };

  for (std::size_t pi = 0; pi < shown.size(); ++pi) {
    const std::string& gp = shown[pi];
    const double top = top_margin + pi * (panel_h + gap), bottom = top + panel_h;
    auto get = [&](std::size_t i) -> const group_sample* {
      for (const auto& [p, g] : samples[i].groups)
        if (p == gp) return g.alive ? &g : nullptr;
      return nullptr;
    };
    // y scale: the largest of usage and finite limits.
    double ymax = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const group_sample* g = get(i);
      if (!g) continue;
      double sum = 0;
      for (auto b : g->stat.bytes) sum += static_cast<double>(b);
      ymax = std::max({ymax, sum / mib, g->current / mib});
      for (std::int64_t l : {g->max, g->high, g->kmem_max, g->tcp_max})
        if (l != INT64_MAX) ymax = std::max(ymax, l / mib);
    }
    // Below 1 MiB the axis counts KiB (socket lessons hold a few pages).
    const bool kib = ymax < 1.0;
    const double unit = kib ? 1024.0 : mib;
    const char* unit_name = kib ? "KiB" : "MiB";
    double ytop, ystep;
    nice_axis(ymax * 1.05 * (mib / unit), &ytop, &ystep);
    auto y_of = [&](double bytes) { return bottom - (bytes / unit) / ytop * panel_h; };

    o << "<g class=\"panel\" data-group=\"" << esc(gp) << "\">\n<text x=\"" << left << "\" y=\"" << top - 8
      << "\" font-size=\"14\" font-weight=\"bold\">group "
      << esc(gp) << (gp == "/" ? " (root: the whole program)" : "") << "</text>\n";
    // Grid and y axis.
    for (double v = 0; v <= ytop + 1e-9; v += ystep) {
      double y = bottom - v / ytop * panel_h;
      o << "<line x1=\"" << left << "\" y1=\"" << num(y) << "\" x2=\"" << left + plot_w << "\" y2=\""
        << num(y) << "\" stroke=\"#e5e5e5\"/><text x=\"" << left - 6 << "\" y=\"" << num(y + 4)
        << "\" text-anchor=\"end\" fill=\"#444\">" << unit_label(v, unit_name) << "</text>\n";
    }
    // Stacked columns by kind.
    for (std::size_t i = 0; i < n; ++i) {
      const group_sample* g = get(i);
      if (!g) continue;
      double base = 0;
      o << "<g><title>line " << samples[i].line << ": " << esc(samples[i].label) << " | "
        << num(g->current / unit) << " " << unit_name << "</title>";
      for (const layer& l : layers()) {
        double v = 0;
        for (memcg::kind k : l.kinds) v += static_cast<double>(g->stat.bytes[static_cast<int>(k)]);
        if (v <= 0) continue;
        double y1 = y_of(base + v), y0 = y_of(base);
        o << "<rect x=\"" << num(x_of(i) + 0.5) << "\" y=\"" << num(y1) << "\" width=\""
          << num(std::max(col - 1, 0.5)) << "\" height=\"" << num(y0 - y1) << "\" fill=\"" << l.color
          << "\"/>";
        base += v;
      }
      o << "</g>\n";
    }
    // Step lines: current, max, high.
    auto step_line = [&](auto value, const char* color, const char* dash, double w) {
      std::string d;
      bool pen = false;
      for (std::size_t i = 0; i < n; ++i) {
        const group_sample* g = get(i);
        std::int64_t v = g ? value(*g) : INT64_MAX;
        if (v == INT64_MAX) {
          pen = false;
          continue;
        }
        std::string y = num(y_of(static_cast<double>(v)));
        d += (pen ? " L" : " M") + num(x_of(i)) + "," + y + " L" + num(x_of(i + 1)) + "," + y;
        pen = true;
      }
      if (!d.empty())
        o << "<path d=\"" << d << "\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\"" << w
          << "\"" << dash << "/>\n";
    };
    step_line([](const group_sample& g) { return g.current; }, "black", "", 1.5);
    step_line([](const group_sample& g) { return g.max; }, "#d62728", " stroke-dasharray=\"6,3\"", 2);
    step_line([](const group_sample& g) { return g.high; }, "#ff7f0e", " stroke-dasharray=\"2,2\"", 2);
    step_line([](const group_sample& g) { return g.kmem_max; }, "#e15759", " stroke-dasharray=\"8,2,2,2\"", 2);
    step_line([](const group_sample& g) { return g.tcp_max; }, "#b07aa1", " stroke-dasharray=\"8,2,2,2\"", 2);
    // Event marks along the top of the panel.
    for (std::size_t i = 1; i < n; ++i) {
      const group_sample *g = get(i), *p = get(i - 1);
      double cx = x_of(i) + col / 2;
      if (g && p) {
        if (g->ev_max > p->ev_max)
          o << "<path d=\"M" << num(cx - 6) << "," << num(top + 12) << " l6,-10 l6,10 z\" fill=\"#d62728\"><title>"
            << g->ev_max - p->ev_max << " max event(s)</title></path>\n";
        if (g->ev_high > p->ev_high)
          o << "<circle cx=\"" << num(cx) << "\" cy=\"" << num(top + 22) << "\" r=\"5\" fill=\"#ff7f0e\"/>\n";
        if (g->ev_oom > p->ev_oom)
          o << "<text x=\"" << num(cx) << "\" y=\"" << num(top + 40) << "\" text-anchor=\"middle\" font-weight=\"bold\">✕</text>\n";
      }
      if (samples[i].throttled == gp)
        o << "<text x=\"" << num(cx) << "\" y=\"" << num(top + 56)
          << "\" text-anchor=\"middle\" fill=\"#9467bd\" font-weight=\"bold\">T</text>\n";
      if (samples[i].failed && mark_panel[i] == gp)
        o << "<rect class=\"mark-failed\" x=\"" << num(cx - 4) << "\" y=\"" << num(bottom - 10) << "\" width=\"8\" height=\"8\" "
          << (samples[i].failure_expected ? "fill=\"white\" stroke=\"#d62728\" stroke-width=\"1.5\"" : "fill=\"#d62728\"")
          << "><title>line " << samples[i].line << (samples[i].failure_expected ? " refused, as expected: " : " failed: ")
          << esc(samples[i].label) << "</title></rect>\n";
      for (const auto& [g_path, e] : samples[i].sock_events)
        if (g_path != "-" && panel_of(g_path, shown) == gp)
          o << sock_mark(e, cx, top + (e == sock_event::pressure_on || e == sock_event::pressure_off ? 88 : 72), "line " + std::to_string(samples[i].line) + ": " + samples[i].label +
                                              ": " + sock_event_name(e));
    }
    // Axes and x labels (scenario line numbers, time).
    o << "<line x1=\"" << left << "\" y1=\"" << bottom << "\" x2=\"" << left + plot_w << "\" y2=\"" << bottom
      << "\" stroke=\"black\"/><line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\""
      << bottom << "\" stroke=\"black\"/>\n";
    x_axis(bottom);
    o << "</g>\n";
  }

  // The protocol: tcp.memory_allocated against tcp_mem, in pages.
  if (sockets) {
    const double top = top_margin + shown.size() * (panel_h + gap), bottom = top + panel_h;
    double amax = 0;
    for (const sample& sm : samples) amax = std::max(amax, static_cast<double>(sm.tcp.allocated));
    // The y range: the allocation, and the tcp_mem lines unless they are far above it (the
    // defaults are hundreds of thousands of pages); a line above the range is named at the top.
    double ymax = std::max(amax, 1.0);
    for (const sample& sm : samples)
      for (std::int64_t l : {sm.tcp.min, sm.tcp.pressure, sm.tcp.max})
        if (static_cast<double>(l) <= std::max(4 * amax, 16.0)) ymax = std::max(ymax, static_cast<double>(l));
    double ytop, ystep;
    nice_axis(ymax * 1.05, &ytop, &ystep);
    if (ystep < 1) {
      ystep = 1;
      ytop = std::ceil(ytop);
    }
    auto y_of = [&](double pages) { return bottom - pages / ytop * panel_h; };
    o << "<g class=\"panel\" data-group=\"-\">\n<text x=\"" << left << "\" y=\"" << top - 8
      << "\" font-size=\"14\" font-weight=\"bold\">protocol tcp: tcp.memory_allocated against net.ipv4.tcp_mem (pages)</text>\n";
    for (double v = 0; v <= ytop + 1e-9; v += ystep) {
      double y = y_of(v);
      o << "<line x1=\"" << left << "\" y1=\"" << num(y) << "\" x2=\"" << left + plot_w << "\" y2=\"" << num(y)
        << "\" stroke=\"#e5e5e5\"/><text x=\"" << left - 6 << "\" y=\"" << num(y + 4)
        << "\" text-anchor=\"end\" fill=\"#444\">" << static_cast<long long>(v) << "</text>\n";
    }
    auto tcp_line = [&](auto value, const char* color, const char* dash, double w, const char* name) {
      std::string d;
      bool above = false;
      std::int64_t last = 0;
      for (std::size_t i = 0; i < n; ++i) {
        std::int64_t v = value(samples[i].tcp);
        last = v;
        if (static_cast<double>(v) > ytop) {
          above = true;
          continue;
        }
        std::string y = num(y_of(static_cast<double>(v)));
        d += (d.empty() ? "M" : " L") + num(x_of(i)) + "," + y + " L" + num(x_of(i + 1)) + "," + y;
      }
      if (!d.empty())
        o << "<path d=\"" << d << "\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\"" << w << "\"" << dash
          << "><title>" << name << "</title></path>\n";
      return above ? std::string(name) + " " + std::to_string(last) : std::string();
    };
    tcp_line([](const tcp_sample& t) { return t.allocated; }, "#b07aa1", "", 2, "tcp.memory_allocated");
    std::string off;
    for (const std::string& a :
         {tcp_line([](const tcp_sample& t) { return t.min; }, "#2ca02c", " stroke-dasharray=\"4,3\"", 1.5, "min"),
          tcp_line([](const tcp_sample& t) { return t.pressure; }, "#ff7f0e", " stroke-dasharray=\"4,3\"", 1.5, "pressure"),
          tcp_line([](const tcp_sample& t) { return t.max; }, "#d62728", " stroke-dasharray=\"4,3\"", 1.5, "max")})
      if (!a.empty()) off += (off.empty() ? "" : ", ") + a;
    if (!off.empty())
      o << "<text x=\"" << left + plot_w - 4 << "\" y=\"" << top + 12 << "\" text-anchor=\"end\" fill=\"#666\" font-size=\"11\">"
        << "above the panel: tcp_mem " << esc(off) << " (at the end)</text>\n";
    // Pressure: a band while the protocol is under pressure, and the marks where it changed.
    for (std::size_t i = 0; i < n; ++i) {
      if (samples[i].tcp.under_pressure)
        o << "<rect x=\"" << num(x_of(i)) << "\" y=\"" << top << "\" width=\"" << num(col) << "\" height=\"" << panel_h
          << "\" fill=\"#ff7f0e\" opacity=\"0.12\"/>\n";
      double cx = x_of(i) + col / 2;
      for (const auto& [g_path, e] : samples[i].sock_events)
        if (g_path == "-")
          o << sock_mark(e, cx, top + 22, "line " + std::to_string(samples[i].line) + ": " + samples[i].label +
                                              ": the protocol's " + sock_event_name(e));
      if (samples[i].failed && mark_panel[i] == "-")
        o << "<rect class=\"mark-failed\" x=\"" << num(cx - 4) << "\" y=\"" << num(bottom - 10) << "\" width=\"8\" height=\"8\" "
          << (samples[i].failure_expected ? "fill=\"white\" stroke=\"#d62728\" stroke-width=\"1.5\"" : "fill=\"#d62728\"")
          << "><title>line " << samples[i].line << " failed: " << esc(samples[i].label) << "</title></rect>\n";
    }
    o << "<line x1=\"" << left << "\" y1=\"" << bottom << "\" x2=\"" << left + plot_w << "\" y2=\"" << bottom
      << "\" stroke=\"black\"/><line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\""
      << bottom << "\" stroke=\"black\"/>\n";
    x_axis(bottom);
    o << "</g>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace sim
