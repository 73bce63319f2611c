// The data interface training codes against: a manifest written once by
// `vitengine prepare`, its statistics, and a threaded, prefetching batch loader.
// Order and every augmentation are a pure function of (seed, epoch, position).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/data/augment.h"  // AugmentConfig
#include "engine/data/cell_size.h"  // CellSizeNorm
#include "engine/data/stain.h"      // StainNorm
#include "engine/data/image.h"

namespace vit {

// CSV columns: path,label,split,sha256,source,subset,src
//   path relative to src; label = class name; split = train|val|test; sha256 of the file bytes;
//   source = "pbc"/"aml-lmu"/top folder name; subset = for train rows the smallest nested subset holding it
//   (5, 20 or 100; others 100); src = the SRC directory given to prepare (absolute).
struct Sample {
  std::string path, src, split, sha256, source;
  int label = -1;
  int subset = 100;
  std::string full_path() const;
};
struct Manifest {
  std::vector<Sample> samples;
  std::vector<std::string> classes;  // class names in model output order; Sample::label indexes it
  std::string dir;                   // directory holding the manifest
};
// data_root, when given, replaces every row's src. The class list comes from classes.txt beside
// the csv, else "classes" in report.json beside it, else the sorted distinct labels.
// Throws std::runtime_error naming file:line.
Manifest read_manifest(const std::string& csv_path, const std::string& data_root = "");
// Rows of one split; for train, subset_pct (5, 20, 100) keeps rows with subset <= subset_pct.
std::vector<Sample> select(const Manifest&, const std::string& split, int subset_pct = 100);
// Writes the manifest atomically, each sample's label as classes[label], and classes.txt beside it.
void write_manifest(const std::string& csv_path, const std::vector<Sample>& samples,
                    const std::vector<std::string>& classes);

struct DataStats {
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
};
// Reads "mean" and "std" (3 floats each) from prepare's report.json.
DataStats read_stats(const std::string& report_json);
// Whether prepare's labeler said the images have no orientation (cells; "orientation_free" in
// report.json). Sets prepared before the key existed were all cells: true.
bool read_orientation_free(const std::string& report_json);

struct LoaderConfig {
  int batch_size = 32;
  int image_size = 224;
  bool shuffle = true;
  bool drop_last = false;
  bool balanced = false;  // draw with replacement, weight (1/n_class)^balance_power
  float balance_power = 1.0f;
  AugmentConfig aug;
  // Stain normalisation of every image onto a model's reference, after resizing (evaluation of
  // another lab's images; none for training).
  StainNorm stain = StainNorm::kNone;
  StainReference stain_ref;
  // Cell-size normalisation of every image (engine/data/cell_size.h) onto the fraction a model stores.
  CellSizeNorm cell_size = CellSizeNorm::kNone;
  double cell_fraction = 0;
  int threads = 2;   // decode/augment workers
  int prefetch = 2;  // batches prepared ahead of the consumer
  uint64_t seed = 0;
  // Data parallelism: this loader serves rank shard_rank of shard_count. Training splits every
  // batch: the rank takes its contiguous part (batch_size / shard_count images of a full batch),
  // with the order and the augmentation of each image those of the whole batch, so that the
  // ranks together see exactly what one process sees. Evaluation (shard_whole_batches) deals
  // out whole batches instead, batch b to rank b % shard_count, so that every batch, and
  // therefore every logit, is the one a single process computes.
  int shard_rank = 0, shard_count = 1;
  bool shard_whole_batches = false;
};
struct Batch {
  int n = 0;
  int global_n = 0;                // images in the whole batch, over every rank (= n in one process)
  std::vector<float> images;       // (n, 3, S, S), normalised; empty in an epoch started without images
  std::vector<int> labels;         // (n)
  std::vector<size_t> index;       // position of each image in the loader's sample list
  std::vector<AugmentParams> aug;  // (n) each image's augmentation draw (identity when off); filled only
                                   // in an epoch started without images, for whoever augments them (the GPU)
};

class PackFile;

class Loader {
 public:
  Loader(std::vector<Sample> samples, DataStats stats, LoaderConfig cfg);
  // Additive: images come from a memory-mapped pack (already preprocessed at its size,
  // which must equal cfg.image_size) instead of image files.
  Loader(std::shared_ptr<const PackFile> pack, DataStats stats, LoaderConfig cfg);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  size_t size() const;
  // Batches next() yields in an epoch: with shard_whole_batches, this rank's share only.
  size_t batches_per_epoch() const;
  const LoaderConfig& config() const;
  // Order and every augmentation are a pure function of (seed, epoch, position): start_epoch(e, k) skips k batches
  // exactly. load_images = false: next() gives the same batches without pixels (no worker threads, nothing decoded):
  // sample indices, labels and each image's augmentation draw (data_on_device).
  void start_epoch(int epoch, size_t skip_batches = 0, bool load_images = true);
  bool next(Batch& out);  // false at end of epoch; unreadable images throw ImageError naming the file

  // The sample order of an epoch (indices into the sample list), exposed for tests.
  std::vector<size_t> epoch_order(int epoch) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Where a prepared data set's files are: DIR/manifest.csv or the csv itself, and
// the report.json beside it.
std::string manifest_path(const std::string& data);
std::string report_path(const std::string& data);
// classes.txt beside the manifest: one class name per line, in model output order.
std::string classes_path(const std::string& data);
void write_class_list(const std::string& path, const std::vector<std::string>& classes);
std::vector<std::string> read_class_list(const std::string& path);
// read_manifest, with relative paths taken as relative to the manifest's folder
// (so a committed fixture works from any working directory).
// data_root (optional) replaces every row's src, as read_manifest's does.
Manifest read_manifest_resolved(const std::string& csv, const std::string& data_root = "");
// A loader for evaluation: no shuffle, no augmentation, keeps the last batch.
LoaderConfig eval_loader_config(int image_size, int batch_size, int threads);
// The images a model's stain and cell-size references are measured on (`vitengine stain-ref`,
// train's cell_size=normalize): a seeded sample of at most n of the rows, preprocessed to
// image_size. The same rows and seed give the same images, so a reference taken by training and
// one taken afterwards by stain-ref agree.
std::vector<Image> reference_images(std::vector<Sample> rows, int image_size, size_t n = 300, uint64_t seed = 0);

}  // namespace vit
