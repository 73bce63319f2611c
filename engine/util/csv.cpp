#include "engine/util/csv.h"

namespace vit {

std::vector<std::string> split_csv(const std::string& line, bool& ok) {
  std::vector<std::string> out;
  std::string cur;
  bool q = false;
  ok = true;
  for (size_t i = 0; i < line.size(); ++i) {
    char ch = line[i];
    if (q) {
      if (ch == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"')
          cur += '"', ++i;
        else
          q = false;
      } else
        cur += ch;
    } else if (ch == '"')
      q = true;
    else if (ch == ',')
      out.push_back(cur), cur.clear();
    else if (ch != '\r')
      cur += ch;
  }
  if (q) ok = false;
  out.push_back(cur);
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string o = "\"";
  for (char ch : s) o += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return o + "\"";
}

}  // namespace vit
