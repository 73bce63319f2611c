// Hand-written JSON (configs, label maps): comments allowed, a key given twice in one object
// refused with the object named; equal keys in different objects are fine.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "engine/util/json.h"

namespace {

std::string write_tmp(const std::string& text) {
  const auto p = std::filesystem::temp_directory_path() / ("vit_json_" + std::to_string(::getpid()) + ".json");
  std::ofstream(p) << text;
  return p.string();
}

// The error read_hand_written_json gives for `text`, or "no error".
std::string error_of(const std::string& text) {
  const std::string p = write_tmp(text);
  std::string m = "no error";
  try {
    vit::read_hand_written_json(p, "test file");
  } catch (const std::runtime_error& e) {
    m = e.what();
  }
  std::filesystem::remove(p);
  return m;
}

}  // namespace

TEST(HandWrittenJson, EqualKeysInDifferentObjectsAndCommentsAreFine) {
  const std::string p = write_tmp(R"({"a": {"x": 1}, // a comment
                                      "b": {"x": 2}, "c": [{"x": 3}, {"x": 4}]})");
  const nlohmann::json j = vit::read_hand_written_json(p, "test file");
  EXPECT_EQ(j["b"]["x"], 2);
  EXPECT_EQ(j["c"][1]["x"], 4);
  std::filesystem::remove(p);
}

TEST(HandWrittenJson, AKeyGivenTwiceIsRefusedNamingItsObject) {
  EXPECT_NE(error_of(R"({"k": 1, "k": 2})").find("key 'k' is given twice in the top-level object"), std::string::npos);
  EXPECT_NE(error_of(R"({"a": {"b": {"k": 1, "j": 0, "k": 1}}})").find("key 'k' is given twice in object 'a.b'"),
            std::string::npos);
  // A key closed with its object does not count against the next object.
  EXPECT_EQ(error_of(R"({"a": {"k": 1}, "k": 2})"), "no error");
  const std::string m = error_of("{\"a\": ");
  EXPECT_EQ(m.rfind("test file '", 0), 0u) << m;
  EXPECT_NE(m.find("is not valid JSON"), std::string::npos) << m;
}
