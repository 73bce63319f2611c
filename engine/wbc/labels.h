// The white-blood-cell data: how a wbc14 file gets its class (file-name prefix, else its class
// folder), as the labeler `vitengine prepare` takes (engine/data/prepare.h).
#pragma once
#include "engine/data/prepare.h"

namespace vit::wbc {

// The 14 classes in model output order; label_of: class_from_filename, else the parent folder
// through class_from_folder; is_class_folder: class_from_folder knows the name.
Labeler labeler();

// The 14 class names in model output order.
std::vector<std::string> class_names();

}  // namespace vit::wbc
