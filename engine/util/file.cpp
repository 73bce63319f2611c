#include "engine/util/file.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace vit {

namespace {
// The temp file is "<target>.tmp.<pid>": remove_stale_temp_files reads the pid back.
constexpr char kTempInfix[] = ".tmp.";
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  // The rename below replaces a read-only file as readily as any other (it needs only the folder's
  // permission), so `stain-calibrate --model M --out M` overwrote a model its owner had protected
  // with chmod a-w; a file with every write permission off is taken as "keep", whoever runs this.
  std::error_code ec;
  const auto st = std::filesystem::status(path_, ec);
  const auto write = std::filesystem::perms::owner_write | std::filesystem::perms::group_write |
                     std::filesystem::perms::others_write;
  if (!ec && std::filesystem::is_regular_file(st) && (st.permissions() & write) == std::filesystem::perms::none)
    throw std::runtime_error(path_ + ": the file is read-only; it is not replaced (write to another path, or make it "
                                     "writable first)");
  tmp_ = path_ + kTempInfix + std::to_string(::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) throw std::runtime_error(path_ + ": cannot create " + tmp_ + ": " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

void AtomicFile::fail(const std::string& why) {
  if (f_) std::fclose(f_);
  f_ = nullptr;
  std::remove(tmp_.c_str());
  throw std::runtime_error(path_ + ": " + why);
}

void AtomicFile::write(const void* data, size_t n) {
  if (!f_) throw std::logic_error(path_ + ": write after commit");
  if (n && std::fwrite(data, 1, n, f_) != n) fail("write failed (disk full?)");
}

void AtomicFile::seek(uint64_t offset) {
  if (!f_) throw std::logic_error(path_ + ": seek after commit");
  if (std::fseek(f_, long(offset), SEEK_SET) != 0) fail("seek failed");
}

void AtomicFile::commit() {
  if (!f_) throw std::logic_error(path_ + ": committed twice");
  bool ok = std::fflush(f_) == 0;
  ok = ok && ::fsync(fileno(f_)) == 0;
  ok = (std::fclose(f_) == 0) && ok;
  f_ = nullptr;
  if (!ok) {
    std::remove(tmp_.c_str());
    throw std::runtime_error(path_ + ": write failed (disk full?)");
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp_.c_str());
    throw std::runtime_error(path_ + ": cannot rename temp file into place: " + std::strerror(e));
  }
}

void write_file_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& chunks) {
  AtomicFile f(path);
  for (const auto& c : chunks) f.write(c.first, c.second);
  f.commit();
}

void write_file_atomic(const std::string& path, const void* data, size_t n) { write_file_atomic(path, {{data, n}}); }

namespace {

// The pid of "<name>.tmp.<pid>", or 0 when `file` is not a temp file of `name`.
pid_t temp_file_pid(const std::string& file, const std::string& name) {
  const std::string prefix = name + kTempInfix;
  if (file.size() <= prefix.size() || file.compare(0, prefix.size(), prefix) != 0) return 0;
  const std::string digits = file.substr(prefix.size());
  if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
  return pid_t(std::stol(digits));
}

// kill(pid, 0) sends nothing: it only asks whether the process exists (EPERM: it does, another user's).
bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

std::vector<std::string> remove_stale_temp_files(const std::string& folder, const std::vector<std::string>& names) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    std::error_code st;
    if (!e.is_regular_file(st) || e.is_symlink(st)) continue;
    for (const auto& n : names) {
      const pid_t pid = temp_file_pid(e.path().filename().string(), n);
      // pid 0 would ask about our whole process group: no temp file of ours carries it
      if (pid > 0 && !process_alive(pid) && fs::remove(e.path(), st)) removed.push_back(e.path().string());
    }
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> buf;
  if (std::fseek(f, 0, SEEK_END) == 0) {
    const long n = std::ftell(f);
    if (n > 0) buf.reserve(size_t(n));
    std::fseek(f, 0, SEEK_SET);
  }
  uint8_t tmp[1 << 16];
  size_t got;
  while ((got = std::fread(tmp, 1, sizeof tmp, f)) > 0) buf.insert(buf.end(), tmp, tmp + got);
  const bool err = std::ferror(f);
  std::fclose(f);
  if (err) throw std::runtime_error(path + ": read error");
  return buf;
}

std::string absolute_path(const std::string& path) {
  std::string r = std::filesystem::absolute(path).lexically_normal().string();
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  return r;
}

bool is_under(const std::string& path, const std::string& folder) {
  return !folder.empty() && path.rfind(folder == "/" ? folder : folder + "/", 0) == 0 && path != folder;
}

std::vector<FoundFile> files_under(const std::string& root) {
  namespace fs = std::filesystem;
  std::vector<FoundFile> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code st;
    if (it->is_regular_file(st)) {
      out.push_back({it->path().string(), ""});
      continue;
    }
    if (!it->is_symlink(st)) continue;
    const fs::file_status target = fs::status(it->path(), st);
    if (st == std::errc::no_such_file_or_directory || (!st && !fs::exists(target)))
      out.push_back({it->path().string(), "a link to '" + fs::read_symlink(it->path(), st).string() +
                                              "', which does not exist"});
    else if (st)  // a loop of links, a target that cannot be reached
      out.push_back({it->path().string(), "a link that cannot be followed (" + st.message() + ")"});
  }
  if (ec) throw std::runtime_error("cannot list folder " + root + ": " + ec.message());
  std::sort(out.begin(), out.end(), [](const FoundFile& a, const FoundFile& b) { return a.path < b.path; });
  return out;
}

}  // namespace vit
