// Manifest I/O and the threaded loader (see dataset.h).
#include "engine/data/dataset.h"

#include "engine/util/csv.h"
#include "engine/util/file.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/data/pack.h"

namespace vit {
namespace fs = std::filesystem;

std::string Sample::full_path() const { return src.empty() ? path : (fs::path(src) / path).string(); }

namespace {

const char* kColumns[] = {"path", "label", "split", "sha256", "source", "subset", "src"};

}  // namespace

namespace {
// The class list of a manifest: classes.txt beside it (write_manifest writes it), else "classes"
// in the report.json beside it, else (a folder prepared before either existed) the distinct
// labels in sorted byte order, the order prepare has always used, so label indices stay the
// same for a set with every class.
std::vector<std::string> manifest_classes(const std::string& csv_path, const std::vector<std::string>& labels) {
  const std::string cp = classes_path(csv_path);
  if (fs::exists(cp)) return read_class_list(cp);
  const std::string rp = report_path(csv_path);
  std::ifstream f(rp);
  if (f) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(f);
    } catch (const std::exception& e) {
      throw std::runtime_error(rp + ": not valid JSON (" + e.what() + ")");
    }
    if (j.contains("classes")) {
      if (!j["classes"].is_array() || j["classes"].empty())
        throw std::runtime_error(rp + ": 'classes' must be a non-empty array of class names");
      return j["classes"].get<std::vector<std::string>>();
    }
  }
  std::vector<std::string> c(labels);
  std::sort(c.begin(), c.end());
  c.erase(std::unique(c.begin(), c.end()), c.end());
  return c;
}
}  // namespace

Manifest read_manifest(const std::string& csv_path, const std::string& data_root) {
  std::ifstream f(csv_path);
  if (!f) throw std::runtime_error(csv_path + ": cannot open manifest");
  Manifest m;
  m.dir = fs::absolute(csv_path).parent_path().string();
  std::vector<std::string> label_names;  // per sample, mapped to indices once the class list is known
  std::vector<int> label_line;
  std::string line;
  int lineno = 0;
  std::vector<int> col(7, -1);
  auto where = [&] { return csv_path + ":" + std::to_string(lineno) + ": "; };
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty() || line == "\r") continue;
    bool ok;
    auto fields = split_csv(line, ok);
    if (!ok) throw std::runtime_error(where() + "unterminated quote");
    if (lineno == 1) {
      for (size_t i = 0; i < fields.size(); ++i)
        for (int k = 0; k < 7; ++k)
          if (fields[i] == kColumns[k]) col[k] = (int)i;
      for (int k = 0; k < 4; ++k)  // path,label,split,sha256 are required; the rest default
        if (col[k] < 0) throw std::runtime_error(where() + "header lacks column '" + kColumns[k] + "'");
      continue;
    }
    auto get = [&](int k) -> std::string {
      if (col[k] < 0) return "";
      if (col[k] >= (int)fields.size()) throw std::runtime_error(where() + "too few fields");
      return fields[col[k]];
    };
    Sample s;
    s.path = get(0);
    label_names.push_back(get(1));
    label_line.push_back(lineno);
    if (label_names.back().empty()) throw std::runtime_error(where() + "empty label");
    s.split = get(2);
    if (s.split != "train" && s.split != "val" && s.split != "test")
      throw std::runtime_error(where() + "split must be train, val or test, not '" + s.split + "'");
    s.sha256 = get(3);
    s.source = get(4);
    const std::string sub = get(5);
    if (!sub.empty()) {
      try {
        s.subset = std::stoi(sub);
      } catch (...) {
        throw std::runtime_error(where() + "bad subset '" + sub + "'");
      }
      if (s.subset != 5 && s.subset != 20 && s.subset != 100)
        throw std::runtime_error(where() + "subset must be 5, 20 or 100, not '" + sub + "'");
    }
    s.src = data_root.empty() ? get(6) : data_root;
    if (s.path.empty()) throw std::runtime_error(where() + "empty path");
    m.samples.push_back(std::move(s));
  }
  if (lineno == 0) throw std::runtime_error(csv_path + ": empty manifest");
  m.classes = manifest_classes(csv_path, label_names);
  for (size_t i = 0; i < m.samples.size(); ++i) {
    auto it = std::find(m.classes.begin(), m.classes.end(), label_names[i]);
    if (it == m.classes.end())
      throw std::runtime_error(csv_path + ":" + std::to_string(label_line[i]) + ": unknown class '" + label_names[i] +
                               "' (not in the data set's class list)");
    m.samples[i].label = int(it - m.classes.begin());
  }
  return m;
}

std::vector<Sample> select(const Manifest& m, const std::string& split, int subset_pct) {
  std::vector<Sample> out;
  for (const auto& s : m.samples)
    if (s.split == split && (split != "train" || s.subset <= subset_pct)) out.push_back(s);
  return out;
}

void write_manifest(const std::string& csv_path, const std::vector<Sample>& samples,
                    const std::vector<std::string>& classes) {
  std::ostringstream f;
  f << "path,label,split,sha256,source,subset,src\n";
  for (const auto& s : samples)
    f << csv_field(s.path) << ',' << csv_field(classes.at(size_t(s.label))) << ',' << s.split << ',' << s.sha256 << ','
      << csv_field(s.source) << ',' << s.subset << ',' << csv_field(s.src) << '\n';
  write_class_list(classes_path(csv_path), classes);
  write_text_atomic(csv_path, f.str());
}

namespace {
nlohmann::json read_report(const std::string& report_json) {
  std::ifstream f(report_json);
  if (!f) throw std::runtime_error(report_json + ": cannot open report");
  nlohmann::json j;
  try {
    f >> j;
  } catch (const std::exception& e) {
    throw std::runtime_error(report_json + ": not valid JSON (" + e.what() + ")");
  }
  return j;
}
}  // namespace

DataStats read_stats(const std::string& report_json) {
  const nlohmann::json j = read_report(report_json);
  DataStats st;
  for (const char* key : {"mean", "std"}) {
    if (!j.contains(key) || !j[key].is_array() || j[key].size() != 3)
      throw std::runtime_error(report_json + ": '" + key + "' must be an array of 3 numbers");
    for (int c = 0; c < 3; ++c) {
      float v = j[key][c].get<float>();
      if (std::string(key) == "std" && !(v > 0)) throw std::runtime_error(report_json + ": std must be > 0");
      (std::string(key) == "mean" ? st.mean : st.std)[c] = v;
    }
  }
  return st;
}

bool read_orientation_free(const std::string& report_json) {
  const nlohmann::json j = read_report(report_json);
  const auto it = j.find("orientation_free");
  if (it == j.end()) return true;
  if (!it->is_boolean()) throw std::runtime_error(report_json + ": 'orientation_free' must be true or false");
  return it->get<bool>();
}

// ---------------------------------------------------------------- Loader
struct Loader::Impl {
  std::vector<Sample> samples;
  std::shared_ptr<const PackFile> pack;
  std::vector<int> labels;
  DataStats stats;
  LoaderConfig cfg;

  struct Slot {
    Batch batch;
    long ready = -1;  // batch number held, -1 = free
    std::exception_ptr error;
  };
  std::vector<Slot> slots;
  std::vector<size_t> order;
  int epoch = 0;
  bool load_images = true;
  size_t nbatches = 0, next_job = 0, cur = 0;
  bool stop = false, started = false;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> workers;

  size_t n() const { return labels.size(); }
  // Batches of the whole epoch, and those this rank yields (all, unless whole batches are dealt out).
  size_t nb_global() const {
    const size_t B = cfg.batch_size;
    return cfg.drop_last ? n() / B : (n() + B - 1) / B;
  }
  size_t nb() const {
    if (!cfg.shard_whole_batches) return nb_global();
    const size_t all = nb_global(), r = size_t(cfg.shard_rank), N = size_t(cfg.shard_count);
    return all > r ? (all - r + N - 1) / N : 0;
  }
  // The epoch's batch number of this rank's j-th batch.
  size_t global_batch(size_t j) const {
    return cfg.shard_whole_batches ? j * size_t(cfg.shard_count) + size_t(cfg.shard_rank) : j;
  }

  std::vector<size_t> make_order(int e) const {
    std::vector<size_t> o(n());
    if (cfg.balanced) {
      // Draw n samples with replacement, P(i) proportional to (1 / n_class(i))^power.
      std::vector<size_t> cnt(size_t(*std::max_element(labels.begin(), labels.end())) + 1, 0);
      for (int l : labels) ++cnt[l];
      std::vector<double> cum(n());
      double acc = 0;
      for (size_t i = 0; i < n(); ++i) cum[i] = acc += std::pow(1.0 / cnt[labels[i]], (double)cfg.balance_power);
      Rng r(mix_seed(cfg.seed, (uint64_t)e, 0xBA1A7CEull));
      for (auto& v : o) v = std::upper_bound(cum.begin(), cum.end(), r.uniform() * acc) - cum.begin();
      for (auto& v : o) v = std::min(v, n() - 1);
      return o;
    }
    for (size_t i = 0; i < n(); ++i) o[i] = i;
    if (cfg.shuffle) {
      Rng r(mix_seed(cfg.seed, (uint64_t)e, 0x5AFF1Eull));
      shuffle(o, r);
    }
    return o;
  }

  // The augmentation of the image at position `pos` of the epoch (identity when off).
  AugmentParams draw(size_t pos) const {
    if (!cfg.aug.enabled) return {};
    Rng r(mix_seed(cfg.seed, (uint64_t)epoch, pos, 0xA06ull));
    return draw_augment(cfg.aug, r);
  }

  void load_one(size_t pos, size_t idx, float* dst) const {
    const int S = cfg.image_size;
    Image img;
    if (pack) {
      img.width = img.height = S;
      img.rgb.assign(pack->image(idx), pack->image(idx) + (size_t)S * S * 3);
      if (cfg.cell_size == CellSizeNorm::kNormalize) img = cell_size_view(img, S, cfg.cell_fraction);
    } else if (cfg.cell_size == CellSizeNorm::kNormalize) {
      img = cell_size_view(load_image(samples[idx].full_path()), S, cfg.cell_fraction);
    } else {
      img = preprocess(load_image(samples[idx].full_path()), S);
    }
    stain_normalize(img, cfg.stain, cfg.stain_ref);
    if (cfg.aug.enabled) apply_augment(img, draw(pos));
    to_chw_normalized(img, stats.mean, stats.std, dst);
  }

  // Batch b of the epoch: its samples and labels, then either the pixels or the draws.
  // Batch b is this rank's j-th (global_batch); a split batch keeps only this rank's part.
  void fill(size_t j, Batch& batch) const {
    const size_t B = cfg.batch_size, b = global_batch(j), first = b * B, end = std::min(n(), first + B);
    const size_t per = (size_t)3 * cfg.image_size * cfg.image_size;
    size_t lo = first, hi = end;
    if (!cfg.shard_whole_batches && cfg.shard_count > 1) {
      // rank r of N takes [m r / N, m (r + 1) / N) of the batch's m images: B / N each when N divides B
      const size_t m = end - first, r = size_t(cfg.shard_rank), N = size_t(cfg.shard_count);
      lo = first + m * r / N;
      hi = first + m * (r + 1) / N;
    }
    batch.global_n = (int)(end - first);
    batch.n = (int)(hi - lo);
    batch.images.resize(load_images ? batch.n * per : 0);  // no reallocation once the buffer has grown
    batch.labels.resize(batch.n);
    batch.index.resize(batch.n);
    batch.aug.resize(load_images ? 0 : batch.n);
    for (size_t p = lo; p < hi; ++p) {
      const size_t idx = order[p];
      batch.index[p - lo] = idx;
      batch.labels[p - lo] = labels[idx];
      if (load_images)
        load_one(p, idx, batch.images.data() + (p - lo) * per);
      else
        batch.aug[p - lo] = draw(p);
    }
  }

  void work() {
    for (;;) {
      size_t b;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop || (next_job < nbatches && next_job < cur + slots.size()); });
        if (stop) return;
        b = next_job++;
      }
      Slot& s = slots[b % slots.size()];
      std::exception_ptr err;
      try {
        fill(b, s.batch);
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        s.error = err;
        s.ready = (long)b;
      }
      cv.notify_all();
    }
  }

  void halt() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
  }

  void init() {
    if (cfg.batch_size <= 0) throw std::invalid_argument("Loader: batch_size must be > 0");
    if (cfg.shard_count < 1 || cfg.shard_rank < 0 || cfg.shard_rank >= cfg.shard_count)
      throw std::invalid_argument("Loader: shard " + std::to_string(cfg.shard_rank) + " of " +
                                  std::to_string(cfg.shard_count) + " does not exist");
    if (cfg.image_size <= 0) throw std::invalid_argument("Loader: image_size must be > 0");
    for (int c = 0; c < 3; ++c)
      if (!(stats.std[c] > 0)) throw std::invalid_argument("Loader: std must be > 0");
    const int nslots = std::max(1, cfg.prefetch) + std::max(1, cfg.threads);
    slots.resize(nslots);
  }
};

Loader::Loader(std::vector<Sample> samples, DataStats stats, LoaderConfig cfg) : impl_(new Impl) {
  impl_->samples = std::move(samples);
  impl_->stats = stats;
  impl_->cfg = cfg;
  for (const auto& s : impl_->samples) {
    if (s.label < 0) throw std::invalid_argument("Loader: sample " + s.full_path() + " has no valid label");
    impl_->labels.push_back(s.label);
  }
  impl_->init();
}

Loader::Loader(std::shared_ptr<const PackFile> pack, DataStats stats, LoaderConfig cfg) : impl_(new Impl) {
  if (!pack) throw std::invalid_argument("Loader: null pack");
  if (pack->size() != cfg.image_size)
    throw std::invalid_argument("Loader: pack " + pack->path() + " holds " + std::to_string(pack->size()) +
                                " px images but image_size is " + std::to_string(cfg.image_size));
  impl_->pack = pack;
  impl_->stats = stats;
  impl_->cfg = cfg;
  for (size_t i = 0; i < pack->count(); ++i) impl_->labels.push_back(pack->label(i));
  impl_->init();
}

Loader::~Loader() { impl_->halt(); }

size_t Loader::size() const { return impl_->n(); }
const LoaderConfig& Loader::config() const { return impl_->cfg; }
size_t Loader::batches_per_epoch() const { return impl_->nb(); }
std::vector<size_t> Loader::epoch_order(int epoch) const { return impl_->make_order(epoch); }

void Loader::start_epoch(int epoch, size_t skip_batches, bool load_images) {
  Impl& m = *impl_;
  m.halt();
  m.stop = false;
  m.epoch = epoch;
  m.load_images = load_images;
  m.order = m.make_order(epoch);
  m.nbatches = m.nb();
  m.cur = m.next_job = std::min(skip_batches, m.nbatches);
  m.started = true;
  for (auto& s : m.slots) s.ready = -1, s.error = nullptr;
  if (!load_images) return;  // next() describes each batch itself: a few draws, no threads needed
  const int nt = std::max(1, m.cfg.threads);
  for (int t = 0; t < nt; ++t) m.workers.emplace_back([&m] { m.work(); });
}

bool Loader::next(Batch& out) {
  Impl& m = *impl_;
  if (!m.started) throw std::logic_error("Loader::next called before start_epoch");
  if (!m.load_images) {
    if (m.cur >= m.nbatches) return false;
    m.fill(m.cur++, out);
    return true;
  }
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(m.mu);
    if (m.cur >= m.nbatches) return false;
    Impl::Slot& s = m.slots[m.cur % m.slots.size()];
    m.cv.wait(lk, [&] { return s.ready == (long)m.cur; });
    std::swap(out, s.batch);  // hand over the filled buffers, keep the caller's old ones for reuse
    err = s.error;
    s.error = nullptr;
    s.ready = -1;
    ++m.cur;
  }
  m.cv.notify_all();
  if (err) std::rethrow_exception(err);
  return true;
}

// ---- where a prepared data set lives, and the loader evaluation uses ----

LoaderConfig eval_loader_config(int image_size, int batch_size, int threads) {
  LoaderConfig c;
  c.batch_size = batch_size;
  c.image_size = image_size;
  c.shuffle = false;
  c.drop_last = false;
  c.balanced = false;
  c.aug = AugmentConfig{};
  c.aug.enabled = false;
  c.threads = threads;
  return c;
}

std::string manifest_path(const std::string& data) {
  if (data.size() > 4 && data.substr(data.size() - 4) == ".csv") return data;
  return (fs::path(data) / "manifest.csv").string();
}
std::string classes_path(const std::string& data) {
  return (fs::path(manifest_path(data)).parent_path() / "classes.txt").string();
}

void write_class_list(const std::string& path, const std::vector<std::string>& classes) {
  std::string text;
  for (const auto& c : classes) {
    if (c.empty() || c.find_first_of("\r\n") != std::string::npos)
      throw std::invalid_argument("class name '" + c + "' is empty or holds a line break");
    text += c + "\n";
  }
  write_text_atomic(path, text);
}

std::vector<std::string> read_class_list(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open class list");
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (std::find(out.begin(), out.end(), line) != out.end())
      throw std::runtime_error(path + ": class '" + line + "' is listed twice");
    out.push_back(line);
  }
  if (out.empty()) throw std::runtime_error(path + ": no class names");
  return out;
}

std::string report_path(const std::string& data) {
  return (fs::path(manifest_path(data)).parent_path() / "report.json").string();
}

Manifest read_manifest_resolved(const std::string& csv, const std::string& data_root) {
  Manifest m = read_manifest(csv, data_root);
  const fs::path dir = fs::absolute(csv).parent_path();
  for (auto& s : m.samples)
    if (fs::path(s.full_path()).is_relative()) s.src = (dir / s.src).lexically_normal().string();
  return m;
}

std::vector<Image> reference_images(std::vector<Sample> rows, int image_size, size_t n, uint64_t seed) {
  Rng r(mix_seed(seed, 0x57A1ull));
  shuffle(rows, r);
  rows.resize(std::min(rows.size(), n));
  std::vector<Image> imgs;
  imgs.reserve(rows.size());
  for (const auto& s : rows) imgs.push_back(preprocess(load_image(s.full_path()), image_size));
  return imgs;
}

}  // namespace vit
