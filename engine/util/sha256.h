// SHA-256 through OpenSSL (EVP): file identities in manifests, tensor checksums in checkpoints,
// model ids. Throws std::runtime_error if OpenSSL fails.
#pragma once
#include <cstddef>
#include <string>

namespace vit {

void sha256_raw(const void* data, size_t n, unsigned char out[32]);
std::string sha256_hex(const void* data, size_t n);  // 64 lower-case hex digits
// A file, read in 1 MiB pieces; throws naming the path if it cannot be read.
std::string sha256_file(const std::string& path);
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }

}  // namespace vit
