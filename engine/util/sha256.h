// SHA-256 through OpenSSL (EVP): file identities in manifests, tensor checksums in checkpoints,
// model ids. Throws std::runtime_error if OpenSSL fails.
#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace vit {

void sha256_raw(const void* data, size_t n, unsigned char out[32]);
std::string sha256_hex(const void* data, size_t n);  // 64 lower-case hex digits
// A file, read in 1 MiB pieces; throws naming the path if it cannot be read.
std::string sha256_file(const std::string& path);
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }
// The files among `paths` whose bytes are an earlier one's, in order: {index of the first file with
// those bytes, index of the copy}. One hash per file (adapt refuses such copies, eval counts them).
std::vector<std::pair<size_t, size_t>> same_bytes(const std::vector<std::string>& paths);

}  // namespace vit
