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

json differential(const std::vector<CellCall>& cells, const std::vector<std::string>& class_names,
                  const DifferentialRules& rules) {
  const int C = int(class_names.size());
  std::vector<std::string> group(C);
  for (int c = 0; c < C; ++c) {
    int t = class_index(class_names[c]);
    if (t < 0) throw std::runtime_error("differential: class '" + class_names[c] + "' is not in the taxonomy");
    group[c] = groups().at(group_of(t));
  }
  auto is_wbc = [](const std::string& g) { return g != "platelet" && g != "erythroblast"; };

  std::vector<int> count(C, 0);
  std::map<std::string, int> gcount;
  json review = json::array();
  for (const auto& cell : cells) {
    if (int(cell.probs.size()) != C)
      throw std::runtime_error("differential: cell '" + cell.name + "' has wrong prob count");
    std::vector<int> order(C);
    for (int c = 0; c < C; ++c) order[c] = c;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return cell.probs[a] > cell.probs[b]; });
    int top = order[0];
    ++count[top];
    ++gcount[group[top]];
    if (cell.probs[top] < rules.review_below) {
      json r = {{"name", cell.name}, {"class", class_names[top]}, {"confidence", round2(100 * cell.probs[top]) / 100}};
      if (C > 1)
        r["second"] = {{"class", class_names[order[1]]}, {"confidence", round2(100 * cell.probs[order[1]]) / 100}};
      if (!cell.thumb_jpeg_b64.empty()) r["thumbnail"] = "data:image/jpeg;base64," + cell.thumb_jpeg_b64;
      review.push_back(r);
    }
  }
  int total = int(cells.size()), wbc = 0;
  for (int c = 0; c < C; ++c)
    if (is_wbc(group[c])) wbc += count[c];

  json per_class = json::array();
  for (int c = 0; c < C; ++c) {
    json row = {{"class", class_names[c]},
                {"group", group[c]},
                {"count", count[c]},
                {"pct_of_cells", round2(pct(count[c], total))}};
    row["pct_of_wbc"] = is_wbc(group[c]) ? json(round2(pct(count[c], wbc))) : json(nullptr);
    per_class.push_back(row);
  }
  auto by_name = [&](const std::string& n) {
    for (int c = 0; c < C; ++c)
      if (class_names[c] == n) return count[c];
    return 0;
  };
  int neut = gcount["neutrophil"], lymph = gcount["lymphocyte"], mono = gcount["monocyte"], eos = gcount["eosinophil"],
      baso = gcount["basophil"], ig = gcount["ig"], blast = gcount["blast"], erb = gcount["erythroblast"],
      plt = gcount["platelet"];
  int band = by_name("Band Neutrophil"), seg = by_name("Segmented Neutrophil"), nos = by_name("Neutrophil");

  json five = json::array();
  auto part = [&](const char* name, int n, const char* includes) {
    five.push_back({{"name", name}, {"count", n}, {"pct_of_wbc", round2(pct(n, wbc))}, {"includes", includes}});
  };
  part("Neutrophils", neut, "band + segmented + neutrophil (stage not given)");
  part("Lymphocytes", lymph, "lymphocyte");
  part("Monocytes", mono, "monocyte");
  part("Eosinophils", eos, "eosinophil");
  part("Basophils", baso, "basophil");
  json outside = json::array();
  outside.push_back({{"name", "Immature granulocytes"},
                     {"count", ig},
                     {"pct_of_wbc", round2(pct(ig, wbc))},
                     {"includes", "promyelocyte + myelocyte + metamyelocyte + immature granulocyte"}});
  outside.push_back(
      {{"name", "Blasts"}, {"count", blast}, {"pct_of_wbc", round2(pct(blast, wbc))}, {"includes", "myeloblast"}});

  json flags = json::array();
  auto flag = [&](const char* name, bool raised, const std::string& rule, const std::string& value) {
    flags.push_back({{"flag", name}, {"raised", raised}, {"rule", rule}, {"value", value}});
  };
  flag("Blasts present", blast >= rules.blast_min,
       "any cell classified as a blast (myeloblast): count >= " + std::to_string(rules.blast_min),
       std::to_string(blast) + " cell(s)");
  flag("Left shift (immature granulocytes)", pct(ig, wbc) > rules.ig_pct_wbc,
       "promyelocytes + myelocytes + metamyelocytes + IG > " + fmt("%.1f", rules.ig_pct_wbc) + "% of WBCs",
       fmt("%.2f", pct(ig, wbc)) + "% (" + std::to_string(ig) + "/" + std::to_string(wbc) + ")");
  flag("Band neutrophils raised", pct(band, neut) > rules.band_pct_neutrophils,
       "band neutrophils > " + fmt("%.1f", rules.band_pct_neutrophils) + "% of all neutrophils",
       fmt("%.2f", pct(band, neut)) + "% (" + std::to_string(band) + "/" + std::to_string(neut) + ")");
  flag("Eosinophilia (relative)", pct(eos, wbc) > rules.eos_pct_wbc,
       "eosinophils > " + fmt("%.1f", rules.eos_pct_wbc) +
           "% of WBCs (the absolute definition, > 0.5 x 10^9/L, needs a WBC count)",
       fmt("%.2f", pct(eos, wbc)) + "%");
  flag("Basophilia (relative)", pct(baso, wbc) > rules.baso_pct_wbc,
       "basophils > " + fmt("%.1f", rules.baso_pct_wbc) +
           "% of WBCs (the absolute definition, > 0.2 x 10^9/L, needs a WBC count)",
       fmt("%.2f", pct(baso, wbc)) + "%");
  flag("Erythroblasts present", erb >= rules.erythroblast_min,
       "any nucleated red cell (erythroblast): count >= " + std::to_string(rules.erythroblast_min),
       std::to_string(erb) + " cell(s), " + fmt("%.1f", wbc > 0 ? 100.0 * erb / wbc : 0.0) + " per 100 WBC");

  return {{"disclaimer", kDisclaimer},
          {"cells_total", total},
          {"wbc_total", wbc},
          {"platelets", plt},
          {"erythroblasts", erb},
          {"erythroblasts_per_100_wbc", round2(wbc > 0 ? 100.0 * erb / wbc : 0.0)},
          {"neutrophil_breakdown", {{"band", band}, {"segmented", seg}, {"unspecified", nos}}},
          {"classes", per_class},
          {"five_part", five},
          {"outside_five_part", outside},
          {"flags", flags},
          {"review", review},
          {"rules",
           {{"ig_pct_wbc", rules.ig_pct_wbc},
            {"band_pct_neutrophils", rules.band_pct_neutrophils},
            {"eos_pct_wbc", rules.eos_pct_wbc},
            {"baso_pct_wbc", rules.baso_pct_wbc},
            {"blast_min", rules.blast_min},
            {"erythroblast_min", rules.erythroblast_min},
            {"review_below", rules.review_below}}}};
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
