// JSON that a person writes by hand (train and pretrain configs, label maps). nlohmann::json keeps
// the last of two equal keys in one object without a word, so {"epochs": 3, "epochs": 4} would
// train for 4 epochs while the author may have meant 3: such a file is refused, naming the key.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace vit {

// The file at `path`, comments allowed. Throws std::runtime_error that starts with
// "<what> '<path>'": it cannot be opened, is not valid JSON, or gives a key twice in one object.
nlohmann::json read_hand_written_json(const std::string& path, const std::string& what);

}  // namespace vit
