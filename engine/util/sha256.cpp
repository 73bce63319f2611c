#include "engine/util/sha256.h"

#include <openssl/evp.h>

#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <vector>

namespace vit {

void sha256_raw(const void* data, size_t n, unsigned char out[32]) {
  unsigned int len = 0;
  if (EVP_Digest(data, n, out, &len, EVP_sha256(), nullptr) != 1 || len != 32)
    throw std::runtime_error("SHA-256 failed (OpenSSL)");
}

namespace {
std::string to_hex(const unsigned char md[32]) {
  static const char* hex = "0123456789abcdef";
  std::string s(64, '0');
  for (int i = 0; i < 32; ++i) {
    s[2 * i] = hex[md[i] >> 4];
    s[2 * i + 1] = hex[md[i] & 15];
  }
  return s;
}
}  // namespace

std::string sha256_hex(const void* data, size_t n) {
  unsigned char md[32];
  sha256_raw(data, n, md);
  return to_hex(md);
}

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed (OpenSSL)");
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    if (f.gcount() > 0 && EVP_DigestUpdate(ctx.get(), buf.data(), size_t(f.gcount())) != 1)
      throw std::runtime_error("SHA-256 failed (OpenSSL)");
  }
  if (f.bad()) throw std::runtime_error(path + ": read error");
  unsigned char md[32];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &n) != 1 || n != 32) throw std::runtime_error("SHA-256 failed (OpenSSL)");
  return to_hex(md);
}

std::vector<std::pair<size_t, size_t>> same_bytes(const std::vector<std::string>& paths) {
  std::map<std::string, size_t> first;  // hash -> the first file with those bytes
  std::vector<std::pair<size_t, size_t>> copies;
  for (size_t k = 0; k < paths.size(); ++k) {
    const auto [it, fresh] = first.emplace(sha256_file(paths[k]), k);
    if (!fresh) copies.emplace_back(it->second, k);
  }
  return copies;
}

}  // namespace vit
