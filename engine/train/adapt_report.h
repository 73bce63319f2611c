// `vitengine adapt --report DIR`: the held-out cells evaluated by the original model and by the
// adapted one, with eval's pictures (confusion matrices, per-class table, reliability diagram),
// so that a lab sees what adapting changed, class by class, on cells it did not train on.
//
// DIR/held_out.csv   the held-out cells as a manifest (split "test"; labels as adapt read them:
//                    the model's classes, or the targets of --map), usable with `vitengine eval`
// DIR/before/, DIR/after/   what `vitengine eval` writes, for the original and the adapted model,
//                    with adapt's --map, --stain-norm and --cell-size
// DIR/summary.md     before and after side by side, linking the pictures
// DIR/card.json      the adaptation card the adapted model stores
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/train/adapt.h"

namespace vit {

// One held-out image: its file and its label's name (a model class, or a --map target).
using HeldOutCell = std::pair<std::string, std::string>;

// Writes the report into req.report (created if missing) for the model req.model (before) and
// req.out (after, already written), and returns {"dir", "before", "after"}: each side's accuracy,
// macro-F1, balanced accuracy and ECE. `labels` lists every label name (the manifest's classes).
nlohmann::json write_adapt_report(const AdaptRequest& req, const std::vector<HeldOutCell>& held,
                                  const std::vector<std::string>& labels, const nlohmann::json& card);

}  // namespace vit
