#include "engine/util/json.h"

#include <fstream>
#include <functional>
#include <set>
#include <stdexcept>
#include <vector>

namespace vit {
namespace {

struct DuplicateKey : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Watches the parser's events: one set of keys per open object, so that equal keys in different
// objects ({"a": {"x": 1}, "b": {"x": 2}}) are fine and equal keys in one object are not.
class KeyWatch {
 public:
  bool operator()(int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) open_.push_back({});
    if (event == E::object_end) open_.pop_back();
    if (event != E::key) return true;
    Object& o = open_.back();
    o.last = parsed.get<std::string>();
    if (!o.keys.insert(o.last).second) throw DuplicateKey("key '" + o.last + "' is given twice in " + where());
    return true;
  }

 private:
  struct Object {
    std::set<std::string> keys;
    std::string last;  // the key whose value is being parsed
  };
  // "the top-level object" or "object 'map'" ('a.b' when nested deeper).
  std::string where() const {
    if (open_.size() == 1) return "the top-level object";
    std::string path;
    for (size_t i = 0; i + 1 < open_.size(); ++i) path += (i ? "." : "") + open_[i].last;
    return "object '" + path + "'";
  }
  std::vector<Object> open_;
};

}  // namespace

nlohmann::json read_hand_written_json(const std::string& path, const std::string& what) {
  const std::string name = what + " '" + path + "'";
  std::ifstream f(path);
  if (!f) throw std::runtime_error(name + " cannot be opened");
  KeyWatch watch;
  try {
    return nlohmann::json::parse(f, std::ref(watch), /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(name + " is not valid JSON: " + e.what());
  } catch (const DuplicateKey& e) {
    throw std::runtime_error(name + ": " + e.what() + " (JSON keeps only one of them; remove the other)");
  }
}

std::string json_text(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool is_valid_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();  // nlohmann's own check, so the answer is what dump() accepts
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace vit
