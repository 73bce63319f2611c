// Files that are never seen half-written. Every output of vitengine (checkpoints, manifests,
// reports, pictures) goes through here: the bytes go to a temp file in the target's folder (so
// that rename() cannot cross file systems; the pid keeps two processes apart), are fsync'ed, and
// the temp file is renamed over the target. A crash leaves the old file or the new one, never a
// mix; an error removes the temp file and throws std::runtime_error naming the path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace vit {

// A file written in pieces (seek allowed) that appears at `path` only on commit().
// Destroyed without commit(), it removes its temp file and leaves `path` as it was.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  void write(const void* data, size_t n);
  void seek(uint64_t offset);  // from the start of the file
  void commit();               // flush, fsync, close, rename into place

 private:
  [[noreturn]] void fail(const std::string& why);
  std::string path_, tmp_;
  FILE* f_ = nullptr;
};

void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& chunks);
void write_file_atomic(const std::string& path, const void* data, size_t n);
inline void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}
inline void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

// The whole file; throws std::runtime_error naming the path.
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace vit
