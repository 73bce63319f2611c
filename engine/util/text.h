// Text in columns on a terminal. printf's "%-22s" pads by bytes, so a UTF-8 name ("细胞",
// "Ångström") falls short of its column; these count the columns a terminal gives it.
#pragma once
#include <string>

namespace vit {

// Terminal columns of UTF-8 text: 2 for a wide or fullwidth East Asian character (CJK, Hangul,
// kana, fullwidth forms, the common emoji blocks), 0 for a combining mark or variation selector,
// 1 for anything else, an invalid byte included (as a terminal shows a replacement character).
int display_width(const std::string& utf8);

// `s` followed by spaces up to `width` columns (nothing added when it is that wide already).
std::string pad_to_width(const std::string& s, int width);

}  // namespace vit
