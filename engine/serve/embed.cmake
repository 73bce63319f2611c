# Turns a file into a C++ source defining `const std::string& NAME()` with the file's bytes,
# so the server carries its web page without looking for files at run time.
# cmake -DIN=index.html -DOUT=index_html.cpp -DNAME=index_html -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," body "${hex}")
# one line of 16 bytes at a time keeps the generated file readable by a compiler error message
string(REGEX REPLACE "(('\\\\x[0-9a-f][0-9a-f]',){16})" "\\1\n    " body "${body}")
file(WRITE "${OUT}.tmp" "// Generated from ${IN} by engine/serve/embed.cmake at build time. Do not edit.
#include <string>

namespace vit {

const std::string& ${NAME}() {
  static const char bytes[] = {
    ${body}};
  static const std::string s(bytes, ${bytes});
  return s;
}

}  // namespace vit
")
file(RENAME "${OUT}.tmp" "${OUT}")
