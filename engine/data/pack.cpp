// Pack files (format in pack.h): written once by `vitengine pack`, memory-mapped by training.
#include "engine/data/pack.h"
#include "engine/util/file.h"
#include "engine/util/thread_pool.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace vit {
namespace {

constexpr char kMagic[8] = {'V', 'I', 'T', 'P', 'A', 'C', 'K', '1'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kHeader = 64;

struct Header {
  char magic[8];
  uint32_t version, header_bytes;
  uint64_t count;
  uint32_t size, channels, num_classes, meta_bytes;
  uint64_t checksum, images_checksum, file_size;
};
static_assert(sizeof(Header) == kHeader, "pack header must be 64 bytes");

uint64_t fnv1a(const void* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const uint8_t* b = (const uint8_t*)p;
  // 8 bytes per step keeps verify() near memory speed; still order-sensitive.
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, b + i, 8);
    h = (h ^ v) * 0x100000001b3ull;
  }
  for (; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

}  // namespace

void decode_samples(const std::vector<Sample>& samples, size_t lo, size_t hi, int size, int threads, uint8_t* out) {
  const size_t per = (size_t)size * size * 3;
  parallel_for(hi - lo, threads, [&](size_t k) {
    Image img = preprocess(load_image(samples[lo + k].full_path()), size);
    std::memcpy(out + k * per, img.rgb.data(), per);
  });
}

void write_pack(const std::string& path, const std::vector<Sample>& samples, const std::vector<std::string>& classes,
                int size, int threads, const std::string& split) {
  if (size <= 0) throw PackError(path + ": bad image size " + std::to_string(size));
  const size_t per = (size_t)size * size * 3, N = samples.size();
  std::vector<int32_t> labels(N);
  nlohmann::json meta;
  meta["split"] = split;
  meta["class_names"] = classes;
  meta["paths"] = nlohmann::json::array();
  meta["sources"] = nlohmann::json::array();
  for (size_t i = 0; i < N; ++i) {
    if (samples[i].label < 0 || samples[i].label >= int(classes.size()))
      throw PackError(path + ": " + samples[i].path + " has no class in the class list");
    labels[i] = samples[i].label;
    meta["paths"].push_back(samples[i].path);
    meta["sources"].push_back(samples[i].source);
  }
  const std::string ms = meta.dump();
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kVersion;
  h.header_bytes = kHeader;
  h.count = N;
  h.size = size;
  h.channels = 3;
  h.num_classes = uint32_t(classes.size());
  h.meta_bytes = (uint32_t)ms.size();
  h.checksum = fnv1a(ms.data(), ms.size(), fnv1a(labels.data(), N * 4));
  h.images_checksum = 0xcbf29ce484222325ull;
  h.file_size = kHeader + N * per + N * 4 + ms.size();

  AtomicFile f(path);     // a failed decode below leaves no pack and no temp file behind
  f.write(&h, sizeof h);  // rewritten at the end with the image checksum
  // Decode in chunks so that memory stays bounded for a large train split.
  const size_t chunk = 512;
  std::vector<uint8_t> buf(std::min(N, chunk) * per);
  for (size_t lo = 0; lo < N; lo += chunk) {
    const size_t hi = std::min(N, lo + chunk);
    decode_samples(samples, lo, hi, size, threads, buf.data());
    for (size_t i = lo; i < hi; ++i) h.images_checksum = fnv1a(&buf[(i - lo) * per], per, h.images_checksum);
    f.write(buf.data(), (hi - lo) * per);
  }
  f.write(labels.data(), N * 4);
  f.write(ms.data(), ms.size());
  f.seek(0);
  f.write(&h, sizeof h);
  f.commit();
}

PackFile::PackFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw PackError(path + ": cannot open pack");
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    throw PackError(path + ": cannot stat pack");
  }
  // A folder opens and has a size, then fails to map with a bare "mmap failed".
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw PackError(path + ": a folder, not a pack file");
  }
  map_size_ = (size_t)st.st_size;
  if (map_size_ < kHeader) {
    ::close(fd);
    throw PackError(path + ": not a vitengine pack (file is " + std::to_string(map_size_) +
                    " bytes, shorter than the header)");
  }
  map_ = mmap(nullptr, map_size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw PackError(path + ": mmap failed");
  }
  auto fail = [&](const std::string& why) {
    munmap(map_, map_size_);
    map_ = nullptr;
    throw PackError(path + ": " + why);
  };
  Header h;
  std::memcpy(&h, map_, sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0) fail("not a vitengine pack (bad magic)");
  if (h.version != kVersion)
    fail("pack version " + std::to_string(h.version) + ", this build reads version " + std::to_string(kVersion));
  if (h.header_bytes != kHeader || h.channels != 3 || h.size == 0 || h.size > 4096) fail("corrupt header");
  const uint64_t per = (uint64_t)h.size * h.size * 3;
  const uint64_t expect = kHeader + h.count * per + h.count * 4 + h.meta_bytes;
  if (h.file_size != expect) fail("corrupt header (sizes do not add up)");
  if (map_size_ != expect)
    fail("file is " + std::to_string(map_size_) + " bytes, header says " + std::to_string(expect) + " (truncated?)");
  if (h.num_classes == 0) fail("corrupt header (no classes)");
  const uint8_t* base = (const uint8_t*)map_;
  images_ = base + kHeader;
  labels_ = (const int32_t*)(images_ + h.count * per);
  const char* meta = (const char*)(labels_ + h.count);
  if (fnv1a(meta, h.meta_bytes, fnv1a(labels_, h.count * 4)) != h.checksum)
    fail("checksum mismatch in labels/metadata");
  count_ = h.count;
  size_ = (int)h.size;
  images_sum_ = h.images_checksum;
  for (size_t i = 0; i < count_; ++i)
    if (labels_[i] < 0 || labels_[i] >= int(h.num_classes)) fail("label out of range at image " + std::to_string(i));
  try {
    auto j = nlohmann::json::parse(meta, meta + h.meta_bytes);
    class_names_ = j.at("class_names").get<std::vector<std::string>>();
    paths_ = j.at("paths").get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    fail(std::string("bad metadata JSON: ") + e.what());
  }
  if (class_names_.size() != h.num_classes)
    fail("pack has " + std::to_string(h.num_classes) + " classes, its metadata names " +
         std::to_string(class_names_.size()));
}

PackFile::~PackFile() {
  if (map_) munmap(map_, map_size_);
}

void PackFile::verify() const {
  const size_t per = (size_t)size_ * size_ * 3;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < count_; ++i) h = fnv1a(images_ + i * per, per, h);  // chained per image, as written
  if (h != images_sum_) throw PackError(path_ + ": image data checksum mismatch (corrupt pack)");
}

}  // namespace vit
