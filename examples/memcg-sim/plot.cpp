// memcg-sim --plot: an SVG timeline of a scenario. One panel per group (the root and the
// top-level groups when there are many), x = the commands in order, y = MiB:
//   stacked columns   the group's memory by kind (memory.stat, hierarchical)
//   black line        memory.current (also counts pages pre-charged in the stock)
//   dashed lines      memory.max (red) and memory.high (orange) where set
//   marks             max / oom / high events, throttles, failed commands
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

std::string mib_label(double v) {
  char b[32];
  if (v == std::floor(v)) std::snprintf(b, sizeof b, "%.0f MiB", v);
  else std::snprintf(b, sizeof b, "%.1f MiB", v);
  return b;
}

}  // namespace

bool write_plot(const std::string& path, const std::string& title, const std::vector<sample>& samples) {
  if (samples.empty()) return false;
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

  const double left = 80, right_legend = 260, plot_w = 760, panel_h = 190, gap = 60, top_margin = 85;
  const double width = left + plot_w + right_legend;
  const double height = top_margin + shown.size() * (panel_h + gap) + 10;
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
  }

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
      if (g->max != INT64_MAX) ymax = std::max(ymax, g->max / mib);
      if (g->high != INT64_MAX) ymax = std::max(ymax, g->high / mib);
    }
    double ytop, ystep;
    nice_axis(ymax * 1.05, &ytop, &ystep);
    auto y_of = [&](double bytes) { return bottom - (bytes / mib) / ytop * panel_h; };

    o << "<g>\n<text x=\"" << left << "\" y=\"" << top - 8 << "\" font-size=\"14\" font-weight=\"bold\">group "
      << esc(gp) << (gp == "/" ? " (root: the whole program)" : "") << "</text>\n";
    // Grid and y axis.
    for (double v = 0; v <= ytop + 1e-9; v += ystep) {
      double y = bottom - v / ytop * panel_h;
      o << "<line x1=\"" << left << "\" y1=\"" << num(y) << "\" x2=\"" << left + plot_w << "\" y2=\""
        << num(y) << "\" stroke=\"#e5e5e5\"/><text x=\"" << left - 6 << "\" y=\"" << num(y + 4)
        << "\" text-anchor=\"end\" fill=\"#444\">" << mib_label(v) << "</text>\n";
    }
    // Stacked columns by kind.
    for (std::size_t i = 0; i < n; ++i) {
      const group_sample* g = get(i);
      if (!g) continue;
      double base = 0;
      o << "<g><title>line " << samples[i].line << ": " << esc(samples[i].label) << " | "
        << num(g->current / mib) << " MiB</title>";
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
      if (samples[i].failed)
        o << "<rect x=\"" << num(cx - 4) << "\" y=\"" << num(bottom + 3) << "\" width=\"8\" height=\"8\" fill=\"#d62728\"><title>line "
          << samples[i].line << " failed: " << esc(samples[i].label) << "</title></rect>\n";
    }
    // Axes and x labels (scenario line numbers).
    o << "<line x1=\"" << left << "\" y1=\"" << bottom << "\" x2=\"" << left + plot_w << "\" y2=\"" << bottom
      << "\" stroke=\"black\"/><line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\""
      << bottom << "\" stroke=\"black\"/>\n";
    std::size_t every = std::max<std::size_t>(1, n / 12);
    for (std::size_t i = 0; i < n; i += every) {
      o << "<text x=\"" << num(x_of(i) + col / 2) << "\" y=\"" << bottom + 24
        << "\" text-anchor=\"middle\" fill=\"#444\" font-size=\"10\">" << (i == 0 ? std::string("start") : "l." + std::to_string(samples[i].line))
        << "</text>\n";
    }
    o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << bottom + 40
      << "\" text-anchor=\"middle\" fill=\"#444\">command (scenario line)</text>\n</g>\n";
  }
  o << "</svg>\n";

  std::ofstream f(path);
  f << o.str();
  return static_cast<bool>(f);
}

}  // namespace sim
