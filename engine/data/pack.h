// Pack format: one split, preprocessed once, in one file that training memory-maps
// (or uploads whole to GPU memory).
//
//   offset  size  field
//   0       8     magic "VITPACK1"
//   8       4     version (uint32, = 1)
//   12      4     header bytes (uint32, = 64)
//   16      8     count N (uint64)
//   24      4     image size S (uint32; images are S x S)
//   28      4     channels C (uint32, = 3)
//   32      4     num_classes (uint32)
//   36      4     metadata JSON bytes M (uint32)
//   40      8     checksum (uint64, FNV-1a over labels + metadata; images are checked by verify())
//   48      8     images checksum (uint64, FNV-1a chained image by image over all image bytes)
//   56      8     total file size (uint64)
//   64      N*S*S*C  uint8 images, HWC each
//   ...     N*4   int32 labels (little-endian)
//   ...     M     metadata JSON: {"class_names": [...], "paths": [...], "split": "...", "sources": [...]}
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/data/dataset.h"

namespace vit {

struct PackError : std::runtime_error {
  explicit PackError(const std::string& what) : std::runtime_error(what) {}
};

// Decodes and preprocesses every sample to size x size on `threads` workers and writes
// the pack atomically. Throws ImageError naming the first unreadable file.
// `classes` (the manifest's class list) is stored in the pack; each sample's label indexes it.
void write_pack(const std::string& path, const std::vector<Sample>& samples, const std::vector<std::string>& classes,
                int size, int threads = 2, const std::string& split = "");

// Decodes and preprocesses samples[lo, hi) to size x size uint8 HWC into out (image i at
// out + (i - lo) * size * size * 3) on `threads` workers. Throws the first ImageError.
void decode_samples(const std::vector<Sample>& samples, size_t lo, size_t hi, int size, int threads, uint8_t* out);

class PackFile {
 public:
  // Maps the file and checks magic, version, sizes, labels and the header checksum. The caller
  // checks that class_names() are the ones it trains on.
  // Throws PackError naming the file and what is wrong.
  explicit PackFile(const std::string& path);
  ~PackFile();
  PackFile(const PackFile&) = delete;
  PackFile& operator=(const PackFile&) = delete;

  size_t count() const { return count_; }
  int size() const { return size_; }
  int channels() const { return 3; }
  const uint8_t* image(size_t i) const { return images_ + i * (size_t)size_ * size_ * 3; }
  const uint8_t* images() const { return images_; }  // whole block, for a GPU upload
  int label(size_t i) const { return labels_[i]; }
  const std::vector<std::string>& class_names() const { return class_names_; }
  const std::vector<std::string>& paths() const { return paths_; }
  const std::string& path() const { return path_; }
  // Re-hashes every image byte (seconds for a large pack); throws PackError on mismatch.
  void verify() const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  size_t count_ = 0;
  int size_ = 0;
  const uint8_t* images_ = nullptr;
  const int32_t* labels_ = nullptr;
  uint64_t images_sum_ = 0;
  std::vector<std::string> class_names_, paths_;
};

}  // namespace vit
