#include "engine/wbc/app.h"
#include "engine/wbc/report.h"
#include "engine/wbc/taxonomy.h"

namespace vit::wbc {

ServeApp serve_app() {
  ServeApp a;
  a.notes = [](const std::string& name) -> nlohmann::json {
    const int t = class_index(name);
    if (t < 0) return nlohmann::json::object();
    const ClassInfo& ci = classes()[t];
    return {{"group", ci.group},
            {"description", ci.description},
            {"abnormal", ci.abnormal},
            {"fact", ci.fact},
            {"sources", ci.sources}};
  };
  a.add_differential = [](const std::vector<ServeCell>& cells, const std::vector<std::string>& names,
                          float review_below, nlohmann::json& out) {
    for (const auto& n : names)
      if (class_index(n) < 0) {
        out["differential_unavailable"] = "the model's class names are not the taxonomy's, so cells cannot be grouped";
        return;
      }
    std::vector<CellCall> calls;
    for (const auto& c : cells) calls.push_back({c.name, c.probs, ""});
    DifferentialRules rules;
    rules.review_below = review_below;
    out["differential"] = differential(calls, names, rules);
  };
  return a;
}

}  // namespace vit::wbc
