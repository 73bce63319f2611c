// What the white-blood-cell application plugs into the engine. The engine knows classes only as
// names; the CLI (tools/) passes these in when the data or the model is the 14-class taxonomy's.
#pragma once
#include <string>
#include <vector>

#include "engine/data/prepare.h"   // Labeler
#include "engine/eval/evaluate.h"  // EvalApp
#include "engine/serve/server.h"   // ServeApp
#include "engine/train/trainer.h"  // ClassGroups

namespace vit::wbc {

// The 14 class names in model output order.
std::vector<std::string> class_names();

// Whether a model's classes are all the taxonomy's (the 14, or some of them): the white-blood-cell
// features (notes, differential, groups) switch on only then.
bool is_cell_model(const std::vector<std::string>& model_classes);

// How `vitengine prepare` labels a wbc14 file: its file-name prefix (BNE_123.jpg), else its class
// folder; a top-level class folder makes the SRC's own name the file's source.
Labeler labeler();

// The 9 coarse groups, for label_level=group.
ClassGroups class_groups();

// Class folders named by class, group or prefix; scoring a group-trained model; accuracy at the
// 9 groups and the hard-class report when the model's classes are the taxonomy's.
EvalApp eval_app();

// Each class's clinical notes, and the differential (counts, 5-part differential, flags) of a
// request with several cells; a model whose classes are not the taxonomy's gets a sentence why
// there is none.
ServeApp serve_app();

}  // namespace vit::wbc
