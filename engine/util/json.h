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

// The text of `j` for a file or a terminal. A file name on Linux is bytes, not always UTF-8 (one
// made on a Latin-1 system: "caf\xe9.png"), and nlohmann::json's dump() throws on such a string,
// after all the work is done: here each invalid byte becomes U+FFFD, as a terminal shows it.
std::string json_text(const nlohmann::json& j, int indent = -1);
// Whether JSON can hold `s` as it is: valid UTF-8 (what json_text would otherwise replace).
bool is_valid_utf8(const std::string& s);

}  // namespace vit
