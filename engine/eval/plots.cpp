#include "engine/eval/plots.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace vit {
namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else if (c == '"')
      o += "&quot;";
    else
      o += c;
  }
  return o;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string header(int w, int h) {
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h << "\" viewBox=\"0 0 " << w
    << " " << h << "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  return s.str();
}

std::string text(double x, double y, const std::string& t, int size = 12, const char* anchor = "start",
                 const std::string& extra = "") {
  std::ostringstream s;
  s << "<text x=\"" << fmt("%.1f", x) << "\" y=\"" << fmt("%.1f", y) << "\" font-size=\"" << size << "\" text-anchor=\""
    << anchor << "\"" << (extra.empty() ? "" : " " + extra) << ">" << esc(t) << "</text>\n";
  return s.str();
}

// "nice" tick step for a range.
double nice_step(double range, int target) {
  double raw = range / std::max(target, 1);
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

std::string tick_label(double v, double step) {
  if (step >= 1) return fmt("%.0f", v);
  if (step >= 0.1) return fmt("%.1f", v);
  if (step >= 0.01) return fmt("%.2f", v);
  return fmt("%.3g", v);
}

// White text on dark cells, black on light ones; blues colour map.
std::string cell_color(double f) {
  f = std::clamp(f, 0.0, 1.0);
  int r = int(247 - f * (247 - 8)), g = int(251 - f * (251 - 48)), b = int(255 - f * (255 - 107));
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", r, g, b);
  return buf;
}

}  // namespace

std::string line_chart_svg(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                           const std::vector<Series>& series, double y_min, double y_max) {
  const int W = 640, H = 400, L = 64, R = 150, T = 40, B = 50;
  const int pw = W - L - R, ph = H - T - B;
  double x0 = 1e300, x1 = -1e300, lo = 1e300, hi = -1e300;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      lo = std::min(lo, s.y[i]);
      hi = std::max(hi, s.y[i]);
    }
  if (x0 > x1) x0 = 0, x1 = 1, lo = 0, hi = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y_min < y_max) lo = y_min, hi = y_max;
  if (hi == lo) hi = lo + 1;
  double ys = nice_step(hi - lo, 5), xs = nice_step(x1 - x0, 8);
  if (!(y_min < y_max)) lo = std::floor(lo / ys) * ys, hi = std::ceil(hi / ys) * ys;
  auto X = [&](double v) { return L + (v - x0) / (x1 - x0) * pw; };
  auto Y = [&](double v) { return T + ph - (v - lo) / (hi - lo) * ph; };

  std::ostringstream s;
  s << header(W, H) << text(W / 2.0, 24, title, 15, "middle", "font-weight=\"bold\"");
  for (double v = lo; v <= hi + ys * 1e-6; v += ys) {
    s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << fmt("%.1f", Y(v)) << "\" y2=\""
      << fmt("%.1f", Y(v)) << "\" stroke=\"#e5e5e5\"/>\n";
    s << text(L - 6, Y(v) + 4, tick_label(v, ys), 11, "end");
  }
  for (double v = std::ceil(x0 / xs) * xs; v <= x1 + xs * 1e-6; v += xs)
    s << text(X(v), T + ph + 16, tick_label(v, xs), 11, "middle");
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"#444\"/>\n";
  s << text(L + pw / 2.0, H - 12, xlabel, 12, "middle");
  s << text(16, T + ph / 2.0, ylabel, 12, "middle", "transform=\"rotate(-90 16 " + fmt("%.1f", T + ph / 2.0) + ")\"");
  int li = 0;
  for (const auto& se : series) {
    std::string pts;
    auto flush = [&]() {
      if (!pts.empty())
        s << "<polyline fill=\"none\" stroke=\"" << se.color << "\" stroke-width=\"2\" points=\"" << pts << "\"/>\n";
      pts.clear();
    };
    for (size_t i = 0; i < se.x.size() && i < se.y.size(); ++i) {
      if (!std::isfinite(se.y[i])) {
        flush();
        continue;
      }
      pts += fmt("%.1f", X(se.x[i])) + "," + fmt("%.1f", Y(se.y[i])) + " ";
      s << "<circle cx=\"" << fmt("%.1f", X(se.x[i])) << "\" cy=\"" << fmt("%.1f", Y(se.y[i])) << "\" r=\"2.5\" fill=\""
        << se.color << "\"/>\n";
    }
    flush();
    double ly = T + 14 + 20 * li++;
    s << "<line x1=\"" << L + pw + 12 << "\" x2=\"" << L + pw + 36 << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4
      << "\" stroke=\"" << se.color << "\" stroke-width=\"2\"/>\n";
    s << text(L + pw + 42, ly, se.name, 12);
  }
  s << "</svg>\n";
  return s.str();
}

std::string confusion_svg(const Metrics& m, bool normalized, const std::string& title) {
  const int R = int(m.row_names.size()), C = int(m.col_names.size());
  const int cell = 44, L = 190, T = 60, B = 170;
  const int W = L + C * cell + 30, H = T + R * cell + B;
  std::ostringstream s;
  s << header(W, H) << text(W / 2.0, 24, title, 15, "middle", "font-weight=\"bold\"");
  int64_t maxc = 1;
  for (const auto& row : m.confusion)
    for (auto v : row) maxc = std::max(maxc, v);
  for (int t = 0; t < R; ++t) {
    int64_t rs = 0;
    for (int p = 0; p < C; ++p) rs += m.confusion[t][p];
    for (int p = 0; p < C; ++p) {
      int64_t v = m.confusion[t][p];
      double f = normalized ? (rs ? double(v) / rs : 0.0) : double(v) / maxc;
      double x = L + p * cell, y = T + t * cell;
      s << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell << "\" height=\"" << cell << "\" fill=\""
        << cell_color(f) << "\" stroke=\"#ddd\"/>\n";
      std::string label = normalized ? (rs ? fmt("%.2f", double(v) / rs) : "-") : std::to_string(v);
      if (normalized && rs && v == 0) label = "0";
      s << text(x + cell / 2.0, y + cell / 2.0 + 4, label, 11, "middle",
                std::string("fill=\"") + (f > 0.55 ? "white" : "black") + "\"");
    }
    s << text(L - 8, T + t * cell + cell / 2.0 + 4, m.row_names[t], 12, "end");
  }
  for (int p = 0; p < C; ++p) {
    double x = L + p * cell + cell / 2.0 + 4, y = T + R * cell + 10;
    s << text(x, y, m.col_names[p], 12, "end",
              "transform=\"rotate(-55 " + fmt("%.1f", x) + " " + fmt("%.1f", y) + ")\"");
  }
  s << text(L + C * cell / 2.0, H - 8, "predicted class", 13, "middle");
  s << text(14, T + R * cell / 2.0, "true class", 13, "middle",
            "transform=\"rotate(-90 14 " + fmt("%.1f", T + R * cell / 2.0) + ")\"");
  s << "</svg>\n";
  return s.str();
}

std::string class_table_svg(const Metrics& m, const std::string& title) {
  const int rows = int(m.per_class.size()) + 3, rh = 24, W = 640, T = 44;
  const int H = T + rows * rh + 16;
  const int cx[5] = {16, 300, 390, 470, 550};
  std::ostringstream s;
  s << header(W, H) << text(W / 2.0, 24, title, 15, "middle", "font-weight=\"bold\"");
  const char* head[5] = {"class", "precision", "recall", "F1", "support"};
  double y = T + 16;
  for (int i = 0; i < 5; ++i)
    s << text(cx[i] + (i ? 60 : 0), y, head[i], 12, i ? "end" : "start", "font-weight=\"bold\"");
  s << "<line x1=\"10\" x2=\"" << W - 10 << "\" y1=\"" << y + 7 << "\" y2=\"" << y + 7 << "\" stroke=\"#444\"/>\n";
  for (size_t r = 0; r < m.per_class.size(); ++r) {
    const auto& k = m.per_class[r];
    y += rh;
    if (r % 2 == 0)
      s << "<rect x=\"10\" y=\"" << y - 16 << "\" width=\"" << W - 20 << "\" height=\"" << rh
        << "\" fill=\"#f3f6fa\"/>\n";
    s << text(cx[0], y, k.name, 12);
    double v[3] = {k.precision, k.recall, k.f1};
    for (int i = 0; i < 3; ++i) {
      // a bar behind each number shows its size at a glance
      s << "<rect x=\"" << cx[i + 1] << "\" y=\"" << y - 13 << "\" width=\"" << fmt("%.1f", 64 * v[i])
        << "\" height=\"16\" fill=\"#9ecae1\" opacity=\"0.6\"/>\n";
      s << text(cx[i + 1] + 60, y, k.support ? fmt("%.3f", v[i]) : "-", 12, "end");
    }
    s << text(cx[4] + 60, y, std::to_string(k.support), 12, "end");
  }
  y += rh;
  s << "<line x1=\"10\" x2=\"" << W - 10 << "\" y1=\"" << y - 16 << "\" y2=\"" << y - 16 << "\" stroke=\"#444\"/>\n";
  s << text(cx[0], y, "macro average (classes present)", 12, "start", "font-weight=\"bold\"");
  s << text(cx[3] + 60, y, fmt("%.3f", m.macro_f1), 12, "end", "font-weight=\"bold\"");
  s << text(cx[2] + 60, y, fmt("%.3f", m.balanced_accuracy), 12, "end", "font-weight=\"bold\"");
  s << text(cx[4] + 60, y, std::to_string(m.total), 12, "end");
  y += rh;
  s << text(cx[0], y, "accuracy " + fmt("%.4f", m.accuracy), 12, "start", "font-weight=\"bold\"");
  s << "</svg>\n";
  return s.str();
}

std::string reliability_svg(const CalibrationReport& r, const std::string& title) {
  const int W = 480, H = 480, L = 60, T = 44, P = 360;
  std::ostringstream s;
  s << header(W, H) << text(W / 2.0, 24, title, 15, "middle", "font-weight=\"bold\"");
  auto X = [&](double v) { return L + v * P; };
  auto Y = [&](double v) { return T + P - v * P; };
  for (int i = 0; i <= 10; i += 2) {
    double v = i / 10.0;
    s << "<line x1=\"" << L << "\" x2=\"" << L + P << "\" y1=\"" << Y(v) << "\" y2=\"" << Y(v)
      << "\" stroke=\"#eee\"/>\n";
    s << text(L - 6, Y(v) + 4, fmt("%.1f", v), 11, "end") << text(X(v), T + P + 16, fmt("%.1f", v), 11, "middle");
  }
  for (const auto& b : r.bins) {
    if (!b.count) continue;
    double x = X(b.lo), w = X(b.hi) - X(b.lo);
    s << "<rect x=\"" << fmt("%.1f", x) << "\" y=\"" << fmt("%.1f", Y(b.accuracy)) << "\" width=\"" << fmt("%.1f", w)
      << "\" height=\"" << fmt("%.1f", Y(0) - Y(b.accuracy)) << "\" fill=\"#3182bd\" stroke=\"white\"/>\n";
    // the gap to the bin's mean confidence, hatched red
    double top = std::max(b.accuracy, b.mean_confidence), bot = std::min(b.accuracy, b.mean_confidence);
    s << "<rect x=\"" << fmt("%.1f", x) << "\" y=\"" << fmt("%.1f", Y(top)) << "\" width=\"" << fmt("%.1f", w)
      << "\" height=\"" << fmt("%.1f", Y(bot) - Y(top)) << "\" fill=\"#de2d26\" opacity=\"0.35\"/>\n";
  }
  s << "<line x1=\"" << X(0) << "\" y1=\"" << Y(0) << "\" x2=\"" << X(1) << "\" y2=\"" << Y(1)
    << "\" stroke=\"#555\" stroke-dasharray=\"5,4\"/>\n";
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << P << "\" height=\"" << P
    << "\" fill=\"none\" stroke=\"#444\"/>\n";
  s << text(L + P / 2.0, H - 40, "confidence (top-class probability)", 12, "middle");
  s << text(18, T + P / 2.0, "accuracy", 12, "middle", "transform=\"rotate(-90 18 " + fmt("%.1f", T + P / 2.0) + ")\"");
  s << text(L + 8, T + 18, "ECE " + fmt("%.4f", r.ece) + "   MCE " + fmt("%.4f", r.mce), 12);
  s << text(L + P / 2.0, H - 16, "blue: accuracy per bin; red: gap to mean confidence", 11, "middle");
  s << "</svg>\n";
  return s.str();
}

std::map<std::string, std::vector<double>> read_numeric_csv(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open '" + path + "'");
  auto split = [](const std::string& line) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : line) {
      if (c == ',') {
        out.push_back(cur);
        cur.clear();
      } else if (c != '\r') {
        cur += c;
      }
    }
    out.push_back(cur);
    return out;
  };
  std::string line;
  if (!std::getline(f, line)) throw std::runtime_error("'" + path + "' is empty");
  auto names = split(line);
  std::map<std::string, std::vector<double>> cols;
  for (const auto& n : names) cols[n];
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    auto cells = split(line);
    for (size_t i = 0; i < names.size(); ++i) {
      double v = NAN;
      if (i < cells.size() && !cells[i].empty()) {
        char* end = nullptr;
        v = std::strtod(cells[i].c_str(), &end);
        if (*end) v = NAN;
      }
      cols[names[i]].push_back(v);
    }
  }
  return cols;
}

std::vector<std::string> write_training_curves(const std::string& csv, const std::string& dir) {
  auto c = read_numeric_csv(csv);
  auto col = [&](const char* n) -> const std::vector<double>& {
    auto it = c.find(n);
    if (it == c.end()) throw std::runtime_error("'" + csv + "' has no column '" + n + "'");
    return it->second;
  };
  const auto& ep = col("epoch");
  std::vector<std::string> out;
  std::string loss = dir + "/loss.svg", acc = dir + "/accuracy.svg";
  write_text_atomic(
      loss, line_chart_svg("Loss per epoch", "epoch", "cross-entropy",
                           {{"train", "#3182bd", ep, col("train_loss")}, {"val", "#e6550d", ep, col("val_loss")}}));
  write_text_atomic(acc, line_chart_svg("Accuracy per epoch", "epoch", "fraction",
                                        {{"train acc", "#3182bd", ep, col("train_acc")},
                                         {"val acc", "#e6550d", ep, col("val_acc")},
                                         {"val macro-F1", "#31a354", ep, col("val_macro_f1")}},
                                        0.0, 1.0));
  out.push_back(loss);
  out.push_back(acc);
  return out;
}

std::vector<std::string> write_eval_pictures(const Metrics& m, const CalibrationReport* calib, const std::string& dir,
                                             const std::string& prefix) {
  std::vector<std::string> out;
  auto put = [&](const std::string& name, const std::string& svg) {
    write_text_atomic(dir + "/" + name, svg);
    out.push_back(dir + "/" + name);
  };
  put("confusion_counts.svg", confusion_svg(m, false, prefix + "confusion matrix (counts)"));
  put("confusion_normalized.svg", confusion_svg(m, true, prefix + "confusion matrix (row-normalised = recall)"));
  put("per_class.svg", class_table_svg(m, prefix + "per-class precision, recall, F1"));
  if (calib) put("reliability.svg", reliability_svg(*calib, prefix + "reliability diagram"));
  return out;
}

}  // namespace vit
