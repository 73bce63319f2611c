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

// What AtomicFile leaves when its process dies mid-write (SIGKILL, power loss): "<name>.tmp.<pid>"
// in the target's folder. Removes, in `folder`, each such file of one of `names` whose process is
// gone, and returns their paths; a live writer's temp file and any other file are left alone.
std::vector<std::string> remove_stale_temp_files(const std::string& folder, const std::vector<std::string>& names);

// The whole file; throws std::runtime_error naming the path.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// The path made absolute and normal, without a trailing '/': "data/./cells/" and "data/cells" give the same
// string, so that paths can be compared as strings.
std::string absolute_path(const std::string& path);
// Whether `path` lies inside `folder` (both as absolute_path gives them); a folder is not inside itself.
bool is_under(const std::string& path, const std::string& folder);

// A file found under a folder: a regular file (error empty), or a link that leads to no file, with
// the reason (a dangling link, a loop of links), so that callers can name it instead of skipping
// it silently or stopping the whole walk on it.
struct FoundFile {
  std::string path;  // as the walk reached it: root / relative path
  std::string error;
};
// Every regular file under root at any depth, and every link that leads nowhere. Links to files are
// followed, links to folders are not (a link to a parent folder would loop); folders that cannot
// be read are skipped. In path order; throws std::runtime_error naming root when it cannot be listed.
std::vector<FoundFile> files_under(const std::string& root);

}  // namespace vit
