// Inference on new images; see inference.h.
#include "engine/eval/inference.h"
#include "engine/eval/tta.h"
#include "engine/util/file.h"
#include "engine/util/sha256.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>

namespace vit {
namespace fs = std::filesystem;

static std::string exe_dir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

std::string resolve_model_path(const std::string& explicit_path) {
  if (!explicit_path.empty()) {
    if (!fs::is_regular_file(explicit_path)) throw std::runtime_error("model file not found: " + explicit_path);
    return explicit_path;
  }
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("VITENGINE_MODEL"); env && *env) candidates.push_back(env);
  std::string dir = exe_dir();
  if (!dir.empty()) {
    candidates.push_back(dir + "/model.vit");
    candidates.push_back(dir + "/../weights/shipped/model.vit");
  }
#ifdef VITENGINE_SOURCE_DIR
  candidates.push_back(std::string(VITENGINE_SOURCE_DIR) + "/weights/shipped/model.vit");
#endif
  for (const auto& c : candidates)
    if (fs::is_regular_file(c)) return c;
  std::string msg = "no --model given and no shipped model found; looked at:";
  for (const auto& c : candidates) msg += " " + c;
  throw std::runtime_error(msg + " (pass --model CKPT or set VITENGINE_MODEL)");
}

void calibrated_softmax(const float* logits, int C, float temperature, float* probs) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw std::invalid_argument("calibration temperature must be > 0, got " + std::to_string(temperature));
  float mx = logits[0];
  for (int c = 1; c < C; ++c) mx = std::max(mx, logits[c]);
  double sum = 0;
  for (int c = 0; c < C; ++c) sum += (probs[c] = std::exp((logits[c] - mx) / temperature));
  for (int c = 0; c < C; ++c) probs[c] = float(probs[c] / sum);
}

std::vector<int> top_k(const std::vector<float>& values, int k) {
  std::vector<int> idx(values.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::max(0, std::min<int>(k, int(values.size())));
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return values[a] > values[b]; });
  idx.resize(k);
  return idx;
}

std::vector<std::string> list_image_files(const std::vector<std::string>& paths, std::vector<std::string>* skipped) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (!fs::is_directory(p, ec)) {
      out.push_back(p);
      continue;
    }
    // A link that leads nowhere is listed too: reading it then fails naming it, as for any unreadable image.
    for (const FoundFile& f : files_under(p))
      if (has_image_extension(f.path))
        out.push_back(f.path);
      else if (skipped)
        skipped->push_back(f.path);
  }
  return out;
}

std::vector<std::string> require_image_files(const std::vector<std::string>& paths) {
  std::vector<std::string> skipped;
  std::vector<std::string> files = list_image_files(paths, &skipped);
  if (!files.empty()) return files;
  std::string m = "no image files found in";
  for (size_t i = 0; i < paths.size(); ++i) m += (i ? ", '" : " '") + paths[i] + "'";
  if (!skipped.empty()) {
    // the example: a file the user put there rather than a hidden one (.DS_Store) when there is one
    auto shown = std::find_if(skipped.begin(), skipped.end(),
                              [](const std::string& f) { return fs::path(f).filename().string()[0] != '.'; });
    const fs::path e = shown == skipped.end() ? skipped.front() : *shown;
    const std::string ext = e.extension().empty() ? "no extension" : "'" + e.extension().string() + "'";
    m += ": skipped " + std::to_string(skipped.size()) + " file" + (skipped.size() == 1 ? "" : "s") +
         " of other formats, e.g. '" + e.string() + "' (" + ext + ")";
  }
  throw std::runtime_error(m + "; images are read from " + image_extensions_text() + " files");
}

Predictor::Predictor(const std::string& checkpoint_path, const std::vector<std::string>& names_if_unnamed)
    : lm_(load_model(checkpoint_path)), source_(checkpoint_path) {
  if (lm_.meta.extra.is_object() && lm_.meta.extra.contains("version") && lm_.meta.extra["version"].is_string())
    version_ = lm_.meta.extra["version"].get<std::string>();
  else
    version_ = lm_.model->config().name + "-" + sha256_file(checkpoint_path).substr(0, 12);
  check_meta(names_if_unnamed);
  use_own_views();
}

Predictor::Predictor(LoadedModel lm, std::string version)
    : lm_(std::move(lm)), version_(std::move(version)), source_(version_) {
  if (!lm_.model) throw std::invalid_argument("Predictor: no model");
  check_meta({});
  use_own_views();
}

void Predictor::check_meta(const std::vector<std::string>& names_if_unnamed) {
  ood_ = OodReference::from_meta(lm_.meta.extra);
  int C = lm_.model->config().num_classes;
  ood_.check_width(lm_.model->config().dim, source_);
  auto& names = lm_.meta.class_names;
  if (names.empty() && int(names_if_unnamed.size()) == C) names = names_if_unnamed;
  if (int(names.size()) != C)
    throw std::runtime_error("model has " + std::to_string(C) + " outputs but " + std::to_string(names.size()) +
                             " class names");
  if (!(lm_.meta.temperature > 0)) throw std::runtime_error("model calibration temperature must be > 0");
}

Image Predictor::model_view(const Image& img) const {
  if (cell_size_ == CellSizeNorm::kNormalize) return cell_size_view(img, image_size(), cell_fraction_);
  return preprocess(img, image_size());
}

Image Predictor::normalized_view(const Image& img) const {
  Image v = model_view(img);
  stain_normalize(v, stain_, stain_ref_);
  return v;
}

void Predictor::to_input(const Image& view, float* out) const {
  to_chw_normalized(view, lm_.meta.mean, lm_.meta.std, out);
}

void Predictor::prepare(const Image& img, float* out) const { to_input(normalized_view(img), out); }

void Predictor::set_stain_norm(const std::string& mode) {
  stain_ = parse_stain_norm(mode);
  if (stain_ != StainNorm::kNone) stain_ref_ = stain_reference_of(lm_.meta, source_, stain_);
}

void Predictor::set_cell_size(const std::string& mode) {
  cell_size_ = resolve_cell_size(mode, lm_.meta);
  if (cell_size_ != CellSizeNorm::kNone) cell_fraction_ = cell_size_reference_of(lm_.meta, source_).fraction;
}

void Predictor::use_own_views() {
  set_cell_size("auto");
  home_fraction_ = cell_size_ == CellSizeNorm::kNormalize ? cell_fraction_ : 0;
}

Image Predictor::home_view(const Image& img) const {
  if (home_fraction_ > 0) return cell_size_view(img, image_size(), home_fraction_);
  return preprocess(img, image_size());
}

bool trained_on_cell_size_views(const ModelMeta& meta) {
  return meta.extra.is_object() && meta.extra.contains("cell_size") && meta.extra["cell_size"].is_object() &&
         meta.extra["cell_size"].value("trained", false);
}

CellSizeNorm resolve_cell_size(const std::string& mode, const ModelMeta& meta) {
  if (mode != "auto") return parse_cell_size_norm(mode);
  return trained_on_cell_size_views(meta) ? CellSizeNorm::kNormalize : CellSizeNorm::kNone;
}

// meta.extra[key], written by `vitengine stain-ref`; a model without it is refused, naming the file
// and saying how to add the `what`.
static const nlohmann::json& stain_ref_entry(const ModelMeta& meta, const char* key, const std::string& model_path,
                                             const std::string& what) {
  if (!meta.extra.is_object() || !meta.extra.contains(key))
    throw std::runtime_error("'" + model_path + "' stores no " + what +
                             "; add the training images' one with `vitengine stain-ref --model M --data PREPARED "
                             "--out M2` (the weights stay as they are)");
  return meta.extra[key];
}

CellSizeReference cell_size_reference_of(const ModelMeta& meta, const std::string& model_path) {
  return CellSizeReference::from_json(stain_ref_entry(meta, "cell_size", model_path, "cell-size reference"));
}

StainReference stain_reference_of(const ModelMeta& meta, const std::string& model_path, StainNorm mode) {
  StainReference r = StainReference::from_json(stain_ref_entry(meta, "stain_reference", model_path, "stain reference"));
  if (mode != StainNorm::kCalibrated) return r;
  if (!meta.extra.contains("stain_calibration"))
    throw std::runtime_error("'" + model_path +
                             "' stores no colour calibration of a lab (--stain-norm calibrated); fit one on the lab's "
                             "own images, no labels needed, with `vitengine stain-calibrate --model " + model_path +
                             " --data FOLDER --out M2`");
  r.calibration = LabCalibration::from_json(meta.extra["stain_calibration"]);
  r.calibrated = true;
  return r;
}

void Predictor::use_device(const std::string& device, int max_batch) {
  if (device == "cpu") {
    backend_.reset();
    return;
  }
  backend_ = make_backend(device, *lm_.model, std::max(1, max_batch), "fp32");
}

void Predictor::set_tta(const std::string& mode) {
  tta_views_ = tta_view_count(mode);  // throws on an unknown mode
  tta_ = mode;
}

std::vector<Prediction> Predictor::run(const float* chw, int B, bool keep_attention) {
  std::vector<Prediction> out(B);
  if (B <= 0) return out;
  ForwardOptions opt;
  opt.training = false;
  opt.inference = !keep_attention;
  const int C = num_classes(), D = config().dim;
  std::vector<float> logits(size_t(B) * C), feats(size_t(B) * D);
  mean_view_logits(
      [&](const float* x) { return backend_ ? backend_->forward(x, B, opt) : lm_.model->forward(x, B, opt); }, chw, B,
      image_size(), C, tta_views_, logits.data(),
      [&] { return backend_ ? backend_->features() : lm_.model->features(); }, D, feats.data());
  for (int b = 0; b < B; ++b) {
    out[b].probs.resize(C);
    out[b].logits.assign(logits.begin() + long(size_t(b) * C), logits.begin() + long(size_t(b + 1) * C));
    out[b].features.assign(feats.begin() + long(size_t(b) * D), feats.begin() + long(size_t(b + 1) * D));
    calibrated_softmax(logits.data() + size_t(b) * C, C, lm_.meta.temperature, out[b].probs.data());
    out[b].top = int(std::max_element(out[b].probs.begin(), out[b].probs.end()) - out[b].probs.begin());
    out[b].confidence = out[b].probs[out[b].top];
    out[b].ood_score = ood_.score(out[b].logits.data(), C, out[b].features.data(), D);
    out[b].unlike_training = ood_.flags(out[b].ood_score);
  }
  return out;
}

void load_images(const std::vector<std::string>& files, size_t begin, size_t end, std::vector<Image>& images,
                 std::vector<std::string>& paths,
                 const std::function<void(const std::string& path, const std::string& what)>& on_error) {
  images.clear();
  paths.clear();
  for (size_t j = begin; j < std::min(files.size(), end); ++j) {
    try {
      images.push_back(load_image(files[j]));
      paths.push_back(files[j]);
    } catch (const std::exception& e) {
      on_error(files[j], e.what());
    }
  }
}

std::vector<Prediction> Predictor::predict(const std::vector<Image>& images, int batch) {
  batch = std::max(1, batch);
  std::vector<Prediction> all;
  std::vector<float> buf;
  for (size_t i = 0; i < images.size(); i += batch) {
    int B = int(std::min<size_t>(batch, images.size() - i));
    buf.resize(size_t(B) * input_floats());
    for (int b = 0; b < B; ++b) prepare(images[i + b], buf.data() + size_t(b) * input_floats());
    auto r = run(buf.data(), B, /*keep_attention=*/false);
    all.insert(all.end(), r.begin(), r.end());
  }
  return all;
}

}  // namespace vit
