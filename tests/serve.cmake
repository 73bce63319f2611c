# vitengine serve: the HTTP library link and the script-driven tests (browser, load).
# Debian ships cpp-httplib as a compiled library (libcpp-httplib-dev); its pkg-config
# file carries the defines (OpenSSL / zlib / brotli) that its headers' layout depends on.
pkg_check_modules(CPPHTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
target_link_libraries(vitcore PUBLIC PkgConfig::CPPHTTPLIB)
