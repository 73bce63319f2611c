// Smear-level differential; see report.h.
#include "engine/wbc/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>

#include "engine/wbc/taxonomy.h"

namespace vit {
using nlohmann::json;

static const char* kDisclaimer =
    "Research tool, not a diagnosis. These counts come from an automated classifier of single-cell images "
    "and can be wrong; every result must be reviewed by a qualified person before any clinical use.";

static double pct(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }
static double round2(double v) { return std::round(v * 100.0) / 100.0; }

static std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

namespace {

// White cells are the denominator of the differential; platelets and erythroblasts are not.
bool is_wbc_group(const std::string& g) { return g != "platelet" && g != "erythroblast"; }

// The taxonomy group of each model class; throws on a class the taxonomy lacks.
std::vector<std::string> groups_of_classes(const std::vector<std::string>& class_names) {
  std::vector<std::string> group(class_names.size());
  for (size_t c = 0; c < class_names.size(); ++c) {
    int t = class_index(class_names[c]);
    if (t < 0) throw std::runtime_error("differential: class '" + class_names[c] + "' is not in the taxonomy");
    group[c] = groups().at(group_of(t));
  }
  return group;
}

// The cells counted once, read by every part of the report.
struct Tally {
  std::vector<std::string> group;          // per class
  std::vector<int> count;                  // cells per class
  std::map<std::string, int> group_count;  // cells per group
  json review = json::array();             // low-confidence cells
  int total = 0, wbc = 0;

  int in_group(const std::string& g) const {
    auto it = group_count.find(g);
    return it == group_count.end() ? 0 : it->second;
  }
};

// A cell for the review list: its top two classes and, when it has one, its thumbnail.
json review_entry(const CellCall& cell, const std::vector<int>& order, const std::vector<std::string>& class_names) {
  const int top = order[0];
  json r = {{"name", cell.name}, {"class", class_names[top]}, {"confidence", round2(100 * cell.probs[top]) / 100}};
  if (order.size() > 1)
    r["second"] = {{"class", class_names[order[1]]}, {"confidence", round2(100 * cell.probs[order[1]]) / 100}};
  if (!cell.thumb_jpeg_b64.empty()) r["thumbnail"] = "data:image/jpeg;base64," + cell.thumb_jpeg_b64;
  return r;
}

Tally tally_cells(const std::vector<CellCall>& cells, const std::vector<std::string>& class_names,
                  const DifferentialRules& rules) {
  const int C = int(class_names.size());
  Tally t;
  t.group = groups_of_classes(class_names);
  t.count.assign(C, 0);
  for (const auto& cell : cells) {
    if (int(cell.probs.size()) != C)
      throw std::runtime_error("differential: cell '" + cell.name + "' has wrong prob count");
    std::vector<int> order(C);
    for (int c = 0; c < C; ++c) order[c] = c;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return cell.probs[a] > cell.probs[b]; });
    const int top = order[0];
    ++t.count[top];
    ++t.group_count[t.group[top]];
    if (cell.probs[top] < rules.review_below) t.review.push_back(review_entry(cell, order, class_names));
  }
  t.total = int(cells.size());
  for (int c = 0; c < C; ++c)
    if (is_wbc_group(t.group[c])) t.wbc += t.count[c];
  return t;
}

// Cells of the class named `name` (0 when the model has no such class).
int count_of(const Tally& t, const std::vector<std::string>& class_names, const std::string& name) {
  for (size_t c = 0; c < class_names.size(); ++c)
    if (class_names[c] == name) return t.count[c];
  return 0;
}

json per_class_table(const Tally& t, const std::vector<std::string>& class_names) {
  json per_class = json::array();
  for (size_t c = 0; c < class_names.size(); ++c) {
    json row = {{"class", class_names[c]},
                {"group", t.group[c]},
                {"count", t.count[c]},
                {"pct_of_cells", round2(pct(t.count[c], t.total))}};
    row["pct_of_wbc"] = is_wbc_group(t.group[c]) ? json(round2(pct(t.count[c], t.wbc))) : json(nullptr);
    per_class.push_back(row);
  }
  return per_class;
}

json wbc_part(const Tally& t, const char* name, int n, const char* includes) {
  return {{"name", name}, {"count", n}, {"pct_of_wbc", round2(pct(n, t.wbc))}, {"includes", includes}};
}

json five_part(const Tally& t) {
  return json::array(
      {wbc_part(t, "Neutrophils", t.in_group("neutrophil"), "band + segmented + neutrophil (stage not given)"),
       wbc_part(t, "Lymphocytes", t.in_group("lymphocyte"), "lymphocyte"),
       wbc_part(t, "Monocytes", t.in_group("monocyte"), "monocyte"),
       wbc_part(t, "Eosinophils", t.in_group("eosinophil"), "eosinophil"),
       wbc_part(t, "Basophils", t.in_group("basophil"), "basophil")});
}

json outside_five_part(const Tally& t) {
  return json::array({wbc_part(t, "Immature granulocytes", t.in_group("ig"),
                               "promyelocyte + myelocyte + metamyelocyte + immature granulocyte"),
                      wbc_part(t, "Blasts", t.in_group("blast"), "myeloblast")});
}

json flag(const char* name, bool raised, const std::string& rule, const std::string& value) {
  return {{"flag", name}, {"raised", raised}, {"rule", rule}, {"value", value}};
}

// The rule-based flags, each with its rule and the value it was judged on.
json flags(const Tally& t, int band, const DifferentialRules& rules) {
  const int wbc = t.wbc, neut = t.in_group("neutrophil"), eos = t.in_group("eosinophil"), baso = t.in_group("basophil"),
            ig = t.in_group("ig"), blast = t.in_group("blast"), erb = t.in_group("erythroblast");
  json f = json::array();
  f.push_back(flag("Blasts present", blast >= rules.blast_min,
                   "any cell classified as a blast (myeloblast): count >= " + std::to_string(rules.blast_min),
                   std::to_string(blast) + " cell(s)"));
  f.push_back(flag("Left shift (immature granulocytes)", pct(ig, wbc) > rules.ig_pct_wbc,
                   "promyelocytes + myelocytes + metamyelocytes + IG > " + fmt("%.1f", rules.ig_pct_wbc) + "% of WBCs",
                   fmt("%.2f", pct(ig, wbc)) + "% (" + std::to_string(ig) + "/" + std::to_string(wbc) + ")"));
  f.push_back(flag("Band neutrophils raised", pct(band, neut) > rules.band_pct_neutrophils,
                   "band neutrophils > " + fmt("%.1f", rules.band_pct_neutrophils) + "% of all neutrophils",
                   fmt("%.2f", pct(band, neut)) + "% (" + std::to_string(band) + "/" + std::to_string(neut) + ")"));
  f.push_back(flag("Eosinophilia (relative)", pct(eos, wbc) > rules.eos_pct_wbc,
                   "eosinophils > " + fmt("%.1f", rules.eos_pct_wbc) +
                       "% of WBCs (the absolute definition, > 0.5 x 10^9/L, needs a WBC count)",
                   fmt("%.2f", pct(eos, wbc)) + "%"));
  f.push_back(flag("Basophilia (relative)", pct(baso, wbc) > rules.baso_pct_wbc,
                   "basophils > " + fmt("%.1f", rules.baso_pct_wbc) +
                       "% of WBCs (the absolute definition, > 0.2 x 10^9/L, needs a WBC count)",
                   fmt("%.2f", pct(baso, wbc)) + "%"));
  f.push_back(
      flag("Erythroblasts present", erb >= rules.erythroblast_min,
           "any nucleated red cell (erythroblast): count >= " + std::to_string(rules.erythroblast_min),
           std::to_string(erb) + " cell(s), " + fmt("%.1f", wbc > 0 ? 100.0 * erb / wbc : 0.0) + " per 100 WBC"));
  return f;
}

json rules_json(const DifferentialRules& rules) {
  return {{"ig_pct_wbc", rules.ig_pct_wbc},    {"band_pct_neutrophils", rules.band_pct_neutrophils},
          {"eos_pct_wbc", rules.eos_pct_wbc},  {"baso_pct_wbc", rules.baso_pct_wbc},
          {"blast_min", rules.blast_min},      {"erythroblast_min", rules.erythroblast_min},
          {"review_below", rules.review_below}};
}

}  // namespace

json differential(const std::vector<CellCall>& cells, const std::vector<std::string>& class_names,
                  const DifferentialRules& rules) {
  const Tally t = tally_cells(cells, class_names, rules);
  const int band = count_of(t, class_names, "Band Neutrophil");
  const int erb = t.in_group("erythroblast");
  return {{"disclaimer", kDisclaimer},
          {"cells_total", t.total},
          {"wbc_total", t.wbc},
          {"platelets", t.in_group("platelet")},
          {"erythroblasts", erb},
          {"erythroblasts_per_100_wbc", round2(t.wbc > 0 ? 100.0 * erb / t.wbc : 0.0)},
          {"neutrophil_breakdown",
           {{"band", band},
            {"segmented", count_of(t, class_names, "Segmented Neutrophil")},
            {"unspecified", count_of(t, class_names, "Neutrophil")}}},
          {"classes", per_class_table(t, class_names)},
          {"five_part", five_part(t)},
          {"outside_five_part", outside_five_part(t)},
          {"flags", flags(t, band, rules)},
          {"review", t.review},
          {"rules", rules_json(rules)}};
}

std::string html_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += ch;
    }
  }
  return o;
}

static std::string num(const json& v) {
  if (v.is_null()) return "&ndash;";
  if (v.is_number_integer()) return std::to_string(v.get<long long>());
  return fmt("%.2f", v.get<double>());
}

std::string differential_html(const json& r, const std::string& title) {
  std::string h;
  h += "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Differential: " + html_escape(title) +
       "</title><style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
       "td.n{text-align:right}.raised{background:#fde2e1;font-weight:bold}.note{background:#fff4d6;padding:.8em;"
       "border-left:4px solid #e0a800}.cells{display:flex;flex-wrap:wrap;gap:10px}.cell{width:120px;font-size:12px}"
       ".cell img{width:112px;height:112px;border:1px solid #999}</style></head><body>\n";
  h += "<h1>Differential count: " + html_escape(title) + "</h1>\n";
  h += "<p class=\"note\"><strong>" + html_escape(r["disclaimer"].get<std::string>()) + "</strong></p>\n";
  if (r.contains("ood") && r["ood"].contains("warning"))  // the folder looks unlike the training data
    h += "<p class=\"note\"><strong>Warning: " + html_escape(r["ood"]["warning"].get<std::string>()) +
         ".</strong></p>\n";
  h += "<p>" + num(r["cells_total"]) + " cells classified: " + num(r["wbc_total"]) + " white cells, " +
       num(r["platelets"]) + " platelets, " + num(r["erythroblasts"]) + " erythroblasts (" +
       num(r["erythroblasts_per_100_wbc"]) + " per 100 WBC). Percentages are of white cells unless stated.</p>\n";

  h += "<h2>Flags</h2><table><tr><th>Flag</th><th>Raised</th><th>Rule</th><th>Value</th></tr>\n";
  for (const auto& f : r["flags"])
    h += std::string("<tr") + (f["raised"].get<bool>() ? " class=\"raised\"" : "") + "><td>" +
         html_escape(f["flag"].get<std::string>()) + "</td><td>" + (f["raised"].get<bool>() ? "YES" : "no") +
         "</td><td>" + html_escape(f["rule"].get<std::string>()) + "</td><td>" +
         html_escape(f["value"].get<std::string>()) + "</td></tr>\n";
  h += "</table>\n";

  h += "<h2>5-part differential</h2><table><tr><th>Part</th><th>Count</th><th>% of WBC</th><th>Includes</th></tr>\n";
  for (const char* key : {"five_part", "outside_five_part"})
    for (const auto& p : r[key])
      h += "<tr><td>" + html_escape(p["name"].get<std::string>()) + "</td><td class=n>" + num(p["count"]) +
           "</td><td class=n>" + num(p["pct_of_wbc"]) + "</td><td>" + html_escape(p["includes"].get<std::string>()) +
           "</td></tr>\n";
  const auto& nb = r["neutrophil_breakdown"];
  h += "</table><p>Neutrophils: " + num(nb["band"]) + " band, " + num(nb["segmented"]) + " segmented, " +
       num(nb["unspecified"]) + " stage not given.</p>\n";

  if (r.contains("map")) {  // differential --map: the counts in another lab's classes
    const auto& m = r["map"];
    h += "<h2>Targets of the label map '" + html_escape(m["name"].get<std::string>()) + "' (rule " +
         html_escape(m["rule"].get<std::string>()) + ")</h2><table><tr><th>Target</th><th>Count</th><th>% of "
         "cells</th></tr>\n";
    for (const auto& t : m["targets"])
      h += "<tr><td>" + html_escape(t["target"].get<std::string>()) + "</td><td class=n>" + num(t["count"]) +
           "</td><td class=n>" + num(t["percent"]) + "</td></tr>\n";
    h += "</table>\n";
  }

  h += "<h2>All classes</h2><table><tr><th>Class</th><th>Group</th><th>Count</th><th>% of cells</th><th>% of "
       "WBC</th></tr>\n";
  for (const auto& c : r["classes"])
    h += "<tr><td>" + html_escape(c["class"].get<std::string>()) + "</td><td>" +
         html_escape(c["group"].get<std::string>()) + "</td><td class=n>" + num(c["count"]) + "</td><td class=n>" +
         num(c["pct_of_cells"]) + "</td><td class=n>" + num(c["pct_of_wbc"]) + "</td></tr>\n";
  h += "</table>\n";

  h += "<h2>Cells for review (" + std::to_string(r["review"].size()) + ")</h2><p>Top probability below " +
       num(r["rules"]["review_below"]) + ".</p><div class=\"cells\">\n";
  for (const auto& c : r["review"]) {
    h += "<div class=\"cell\">";
    if (c.contains("thumbnail"))
      h += "<img alt=\"\" src=\"" + html_escape(c["thumbnail"].get<std::string>()) + "\"><br>";
    h += html_escape(c["name"].get<std::string>()) + "<br>" + html_escape(c["class"].get<std::string>()) + " " +
         num(c["confidence"]);
    if (c.contains("second"))
      h += "<br>or " + html_escape(c["second"]["class"].get<std::string>()) + " " + num(c["second"]["confidence"]);
    h += "</div>\n";
  }
  h += "</div>\n</body></html>\n";
  return h;
}

}  // namespace vit
