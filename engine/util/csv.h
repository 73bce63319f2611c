// RFC 4180 CSV fields, one line at a time: what the manifest and a user's label CSV share.
#pragma once
#include <string>
#include <vector>

namespace vit {

// Splits one line into fields; a quoted field may hold commas and doubled quotes. `ok` is false
// when a quote is left open (a field that would span lines, which these files never need).
std::vector<std::string> split_csv(const std::string& line, bool& ok);

// A field as written: quoted when it holds a comma, quote or line break.
std::string csv_field(const std::string& s);

}  // namespace vit
