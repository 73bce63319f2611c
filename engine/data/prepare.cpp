// Data preparation (see prepare.h and docs/data.md).
#include "engine/data/prepare.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include "engine/data/augment.h"
#include "engine/data/dataset.h"
#include "engine/data/image.h"
#include "engine/data/labels.h"
#include "engine/util/file.h"
#include "engine/util/json.h"
#include "engine/util/sha256.h"
#include "engine/util/thread_pool.h"

namespace vit {
namespace fs = std::filesystem;
using nlohmann::json;

std::vector<uint8_t> luma32(const Image& img) {
  // Square the image (background-coloured pad, as the model sees it), shrink to 32x32 luma.
  Image small = preprocess(img, 32);
  std::vector<uint8_t> g(32 * 32);
  for (int i = 0; i < 32 * 32; ++i) {
    const uint8_t* p = &small.rgb[i * 3];
    g[i] = (uint8_t)std::lround(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]);
  }
  return g;
}

namespace {
uint64_t phash_of_luma(const std::vector<uint8_t>& lum) {
  double g[32][32];
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) g[y][x] = lum[y * 32 + x];
  // 2-D DCT-II, only the 8x8 lowest frequencies are needed.
  static double cosv[8][32];
  static std::once_flag once;
  std::call_once(once, [] {
    for (int u = 0; u < 8; ++u)
      for (int x = 0; x < 32; ++x) cosv[u][x] = std::cos((2 * x + 1) * u * M_PI / 64);
  });
  double rows[32][8];
  for (int y = 0; y < 32; ++y)
    for (int u = 0; u < 8; ++u) {
      double s = 0;
      for (int x = 0; x < 32; ++x) s += g[y][x] * cosv[u][x];
      rows[y][u] = s;
    }
  double c[64];
  for (int v = 0; v < 8; ++v)
    for (int u = 0; u < 8; ++u) {
      double s = 0;
      for (int y = 0; y < 32; ++y) s += rows[y][u] * cosv[v][y];
      c[v * 8 + u] = s;
    }
  // Median of the 63 AC terms (the DC term only says how bright the image is).
  std::vector<double> ac(c + 1, c + 64);
  std::nth_element(ac.begin(), ac.begin() + 31, ac.end());
  const double med = ac[31];
  uint64_t h = 0;
  for (int i = 0; i < 64; ++i)
    if (c[i] > med) h |= 1ull << i;
  return h;
}
}  // namespace

uint64_t phash64(const Image& img) { return phash_of_luma(luma32(img)); }

void parse_split(const std::string& s, int out[3]) {
  int v[3], k = 0;
  size_t pos = 0;
  for (; k < 3; ++k) {
    size_t e = s.find('/', pos);
    std::string part = s.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
    if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("--split must look like 70/10/20, got '" + s + "'");
    v[k] = std::stoi(part);
    if (e == std::string::npos) {
      ++k;
      break;
    }
    pos = e + 1;
  }
  if (k != 3 || v[0] + v[1] + v[2] != 100)
    throw std::invalid_argument("--split needs three percentages that sum to 100, got '" + s + "'");
  for (int i = 0; i < 3; ++i) out[i] = v[i];
}

namespace {

struct FileRec {
  std::string rel, src, shown;  // shown: the path used in the report
  std::string source;
  int label = -1;
  int fixed_split = -1;  // 0 train, 1 val, 2 test when the labeler fixes it (a CSV's split column)
  std::string error;     // non-empty: unreadable, with the reason
  std::string sha, pixsha;
  uint64_t phash = 0;
  std::vector<uint8_t> thumb;  // 32x32 luma
  double sum[3] = {0, 0, 0}, sumsq[3] = {0, 0, 0};
  size_t npx = 0;
};

struct UnionFind {
  std::vector<int> p;
  explicit UnionFind(size_t n) : p(n) { std::iota(p.begin(), p.end(), 0); }
  int find(int x) { return p[x] == x ? x : p[x] = find(p[x]); }
  void join(int a, int b) {
    a = find(a), b = find(b);
    if (a != b) p[std::max(a, b)] = std::min(a, b);
  }
};

// Mean |a - b| of two 32x32 luma thumbnails, minimised over shifts of up to 3 px
// (about 20 px at 224): a cell re-captured a little off-centre is still the same cell.
// Only the overlap is compared; the shift is small enough that the overlap is >= 29x29.
constexpr int kMaxShift = 3;
double shifted_thumb_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  double best = 1e9;
  for (int dy = -kMaxShift; dy <= kMaxShift; ++dy)
    for (int dx = -kMaxShift; dx <= kMaxShift; ++dx) {
      int s = 0, n = 0;
      for (int y = std::max(0, -dy); y < std::min(32, 32 - dy); ++y)
        for (int x = std::max(0, -dx); x < std::min(32, 32 - dx); ++x, ++n)
          s += std::abs((int)a[y * 32 + x] - (int)b[(y + dy) * 32 + x + dx]);
      best = std::min(best, (double)s / n);
    }
  return best;
}

// A folder name for each class: lower-case ASCII letters and digits, '_' for other ASCII, UTF-8
// bytes kept (so "好猫" and "猫猫" stay apart); a name already taken by an earlier class (Cats /
// cats) gets the class index appended.
std::vector<std::string> class_folder_names(const std::vector<std::string>& classes) {
  std::vector<std::string> out;
  std::set<std::string> taken;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::string o;
    for (char ch : classes[c]) {
      const unsigned char u = (unsigned char)ch;
      o += u >= 0x80 ? ch : std::isalnum(u) ? (char)std::tolower(u) : '_';
    }
    if (!taken.insert(o).second) o += "_" + std::to_string(c);
    taken.insert(o);
    out.push_back(o);
  }
  return out;
}

// ======================================================================= the steps
// prepare_dataset runs these in order; each reads what the earlier ones left in Prep.

struct Prep {
  explicit Prep(const PrepareOptions& o) : opt(o), t0(std::chrono::steady_clock::now()) {}
  const PrepareOptions& opt;
  std::chrono::steady_clock::time_point t0;
  std::string out_abs;
  // scan
  std::vector<FileRec> files;
  json ignored = json::array(), sources = json::array();
  // check
  json unreadable = json::array(), unknown = json::array();
  std::vector<int> good;  // indices into files of readable, labelled images
  // duplicates (indices into good)
  std::vector<int> kept;
  size_t exact_groups = 0, near_groups = 0, near_pairs = 0, near_candidates = 0;
  json near_detail = json::array(), conflicts = json::array(), conflict_detail = json::array(),
       dup_detail = json::array();
  // split
  std::vector<Sample> rows;
  std::vector<std::vector<int>> train_of;  // per class: file indices of its train rows
  json split_class = {{"train", json::object()}, {"val", json::object()}, {"test", json::object()}};
  json class_counts = json::object();
  double sum[3] = {0, 0, 0}, sumsq[3] = {0, 0, 0};
  size_t npx = 0;
  json small_classes = json::array();  // classes too small to give every split an image
  // top-up
  size_t n_topup = 0;
  json topup_counts = json::object();

  void say(const std::string& s) const {
    if (opt.progress) opt.progress(s);
  }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  const std::string& class_name(int c) const { return opt.labeler.classes.at(size_t(c)); }
};

}  // namespace

void check_out_folder(const std::vector<std::string>& srcs, const std::string& out) {
  const std::string o = absolute_path(out);
  for (const auto& src : srcs)
    if (absolute_path(src) == o || is_under(absolute_path(src), o))
      throw std::runtime_error("prepare: --out '" + out + "' is the SRC folder '" + src +
                               "' or holds it, and prepare reads nothing under --out (its own earlier output); "
                               "choose another --out, e.g. beside SRC");
}

namespace {

void validate(const PrepareOptions& opt) {
  if (opt.srcs.empty()) throw std::runtime_error("prepare: no SRC folder given");
  if (opt.split[0] + opt.split[1] + opt.split[2] != 100) throw std::runtime_error("prepare: split must sum to 100");
  if (opt.size <= 0) throw std::runtime_error("prepare: --size must be > 0");
  if (opt.labeler.classes.empty() || !opt.labeler.label_of)
    throw std::invalid_argument("prepare: no labeler (class names and a label function) given");
  check_out_folder(opt.srcs, opt.out);
  check_class_list(opt.labeler.classes, "prepare");
}

// Every image file under each SRC, in path order, with its label and source.
void scan(Prep& P) {
  const Labeler& L = P.opt.labeler;
  for (const auto& src : P.opt.srcs) {
    if (!fs::is_directory(src)) throw std::runtime_error(src + ": not a directory");
    const std::string root_s = absolute_path(src);
    const fs::path root(root_s);
    if (root_s.find_first_of("\r\n") != std::string::npos)  // every row's src column: see the file names below
      throw std::runtime_error("prepare: the SRC folder '" + root_s + "' has a line break in its path; rename it");
    P.sources.push_back(root_s);
    std::vector<FileRec> here;
    for (const FoundFile& found : files_under(root_s)) {
      const fs::path path(found.path);
      // Do not re-read a previous run's output if --out sits inside SRC.
      if (is_under(found.path, P.out_abs)) continue;
      FileRec r;
      r.rel = path.lexically_relative(root).generic_string();
      r.src = root_s;
      r.shown = P.opt.srcs.size() == 1 ? r.rel : (fs::path(root_s) / r.rel).string();
      r.error = found.error;  // a link that leads nowhere: unreadable, with the reason
      if (!has_image_extension(found.path)) {
        P.ignored.push_back({{"path", r.shown}, {"reason", "not an image file name (.jpg/.jpeg/.png/.bmp)"}});
        continue;
      }
      // manifest.csv is read a line at a time: a row with a line break in its path could not be read back.
      if (r.rel.find_first_of("\r\n") != std::string::npos) {
        P.ignored.push_back({{"path", r.shown}, {"reason", "a line break in the file name (rename the file to use it)"}});
        continue;
      }
      // Source: the top folder (pbc, aml-lmu); for class-named folders the SRC's own name.
      const fs::path relp(r.rel);
      const std::string top = std::distance(relp.begin(), relp.end()) > 1 ? relp.begin()->string() : "";
      const bool top_is_class = !top.empty() && L.is_class_folder && L.is_class_folder(top);
      r.source = (top.empty() || top_is_class) ? fs::path(root_s).filename().string() : top;
      r.label = L.label_of(r.rel);
      if (r.label >= int(L.classes.size())) throw std::logic_error("prepare: labeler returned an unknown class");
      const std::string fixed = L.split_of ? L.split_of(r.rel) : "";
      r.fixed_split = fixed == "train" ? 0 : fixed == "val" ? 1 : fixed == "test" ? 2 : -1;
      here.push_back(std::move(r));
    }
    std::sort(here.begin(), here.end(), [](const FileRec& a, const FileRec& b) { return a.rel < b.rel; });
    for (auto& r : here) P.files.push_back(std::move(r));
  }
  P.say("prepare: " + std::to_string(P.files.size()) + " image files in " + std::to_string(P.opt.srcs.size()) +
        " folder(s)");
}

// Decodes one file: its hashes, thumbnail and the channel sums of what the model will see.
void check_file(const PrepareOptions& opt, FileRec& r) {
  if (!r.error.empty()) return;  // found unreadable by the scan
  const std::string path = (fs::path(r.src) / r.rel).string();
  try {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ImageError(r.shown + ": cannot open file");
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    r.sha = sha256_hex(bytes.data(), bytes.size());
    Image img = decode_image(bytes.data(), bytes.size(), r.shown);
    if (img.width < opt.min_side || img.height < opt.min_side)
      throw ImageError(r.shown + ": tiny image " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                       " (minimum side " + std::to_string(opt.min_side) + " px)");
    std::vector<uint8_t> px(8 + img.rgb.size());
    std::memcpy(px.data(), &img.width, 4);
    std::memcpy(px.data() + 4, &img.height, 4);
    std::memcpy(px.data() + 8, img.rgb.data(), img.rgb.size());
    r.pixsha = sha256_hex(px.data(), px.size());
    r.thumb = luma32(img);
    r.phash = phash_of_luma(r.thumb);
    // Channel sums of what the model will see (padded + resized), for train-only stats.
    Image m = preprocess(img, opt.size);
    for (size_t k = 0; k < m.rgb.size(); ++k) {
      const double v = m.rgb[k] / 255.0;
      r.sum[k % 3] += v;
      r.sumsq[k % 3] += v * v;
    }
    r.npx = m.rgb.size() / 3;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // The reason without the path prefix (the report has its own path field).
    const std::string pre = r.shown + ": ";
    r.error = msg.rfind(pre, 0) == 0 ? msg.substr(pre.size()) : msg;
  }
}

// Checks and hashes every file on the worker threads, then sorts them into good, unreadable
// and unlabelled.
void check(Prep& P) {
  std::atomic<size_t> done{0};
  std::mutex say_mu;
  auto last = std::chrono::steady_clock::now();
  parallel_for(P.files.size(), P.opt.threads, [&](size_t i) {
    check_file(P.opt, P.files[i]);
    const size_t d = ++done;
    if (d % 500 == 0 || d == P.files.size()) {
      std::lock_guard<std::mutex> lk(say_mu);
      auto now = std::chrono::steady_clock::now();
      if (now - last > std::chrono::seconds(2) || d == P.files.size()) {
        last = now;
        P.say("prepare: checked " + std::to_string(d) + "/" + std::to_string(P.files.size()) + " (" +
              std::to_string((int)(d / std::max(P.seconds(), 1e-9))) + " files/s)");
      }
    }
  });
  for (size_t i = 0; i < P.files.size(); ++i) {
    if (!P.files[i].error.empty())
      P.unreadable.push_back({{"path", P.files[i].shown}, {"reason", P.files[i].error}});
    else if (P.files[i].label < 0)
      P.unknown.push_back({{"path", P.files[i].shown}, {"reason", P.opt.labeler.unlabelled_reason}});
    else
      P.good.push_back((int)i);
  }
}

// Joins byte-identical files and files with identical pixels (indices into good).
void join_exact(const Prep& P, UnionFind& exact, UnionFind& all) {
  std::map<std::string, int> by_sha, by_pix;
  for (size_t k = 0; k < P.good.size(); ++k) {
    const FileRec& r = P.files[P.good[k]];
    for (auto* m : {&by_sha, &by_pix}) {
      const std::string& key = m == &by_sha ? r.sha : r.pixsha;
      auto [it, fresh] = m->emplace(key, (int)k);
      if (!fresh) exact.join((int)k, it->second), all.join((int)k, it->second);
    }
  }
}

// Joins near duplicates. pHash proposes, the thumbnails confirm: every blood-cell image is "a
// purple blob in the middle of pink", so low-frequency hashes of different cells can be close.
void join_near(Prep& P, UnionFind& exact, UnionFind& all) {
  if (P.opt.near_threshold < 0) return;
  const size_t G = P.good.size();
  struct Pair {
    int a, b, hd;
    double diff;
  };
  std::vector<std::vector<Pair>> found(G);
  std::vector<size_t> cand(G, 0);
  parallel_for(G, P.opt.threads, [&](size_t a) {
    for (size_t b = a + 1; b < G; ++b) {
      const int hd = __builtin_popcountll(P.files[P.good[a]].phash ^ P.files[P.good[b]].phash);
      if (hd > P.opt.near_threshold) continue;
      ++cand[a];
      const double diff = shifted_thumb_diff(P.files[P.good[a]].thumb, P.files[P.good[b]].thumb);
      if (diff <= P.opt.near_max_diff) found[a].push_back({(int)a, (int)b, hd, diff});
    }
  });
  for (size_t a = 0; a < G; ++a) {
    P.near_candidates += cand[a];
    for (const Pair& p : found[a]) {
      if (exact.find(p.a) == exact.find(p.b)) continue;  // already an exact duplicate
      ++P.near_pairs;
      all.join(p.a, p.b);
      P.near_detail.push_back({{"a", P.files[P.good[p.a]].shown},
                               {"b", P.files[P.good[p.b]].shown},
                               {"hamming", p.hd},
                               {"thumb_diff", std::round(p.diff * 100) / 100}});
    }
  }
}

// Keeps one file of each duplicate group, and none of a group whose members disagree on the label.
void deduplicate(Prep& P) {
  const size_t G = P.good.size();
  UnionFind exact(G), all(G);
  join_exact(P, exact, all);
  join_near(P, exact, all);
  std::map<int, std::vector<int>> comp, ecomp;
  for (size_t k = 0; k < G; ++k) comp[all.find((int)k)].push_back((int)k), ecomp[exact.find((int)k)].push_back((int)k);
  for (auto& [root, m] : ecomp)
    if (m.size() > 1) ++P.exact_groups;
  for (auto& [root, m] : comp) {
    if (m.size() == 1) {
      P.kept.push_back(m[0]);
      continue;
    }
    // A component that is more than one exact group was joined by a perceptual-hash match.
    std::set<int> eroots;
    for (int k : m) eroots.insert(exact.find(k));
    const bool is_near = eroots.size() > 1;
    if (is_near) ++P.near_groups;
    std::set<int> labels;
    json paths = json::array(), labs = json::array();
    for (int k : m) {
      labels.insert(P.files[P.good[k]].label);
      paths.push_back(P.files[P.good[k]].shown);
      labs.push_back(P.class_name(P.files[P.good[k]].label));
    }
    if (labels.size() > 1) {
      P.conflicts.push_back(paths);
      P.conflict_detail.push_back({{"paths", paths}, {"labels", labs}, {"kind", is_near ? "near" : "exact"}});
      continue;  // the whole group is dropped: no member's label can be trusted
    }
    P.kept.push_back(m[0]);  // members are in path order; keep the first
    json dropped = json::array();
    for (size_t j = 1; j < m.size(); ++j) dropped.push_back(P.files[P.good[m[j]]].shown);
    P.dup_detail.push_back(
        {{"kind", is_near ? "near" : "exact"}, {"kept", P.files[P.good[m[0]]].shown}, {"dropped", dropped}});
  }
  P.say("prepare: " + std::to_string(P.exact_groups) + " exact-duplicate groups, " + std::to_string(P.near_groups) +
        " near-duplicate groups (pHash Hamming <= " + std::to_string(P.opt.near_threshold) + "), " +
        std::to_string(P.conflicts.size()) + " label conflicts");
}

// Train / val / test counts of n images at the split percentages (the rounding every stratum uses).
std::array<size_t, 3> split_counts_of(size_t n, const int pct[3]) {
  const size_t n_train = (size_t)std::lround(n * pct[0] / 100.0);
  const size_t n_tv = std::max(n_train, (size_t)std::lround(n * (pct[0] + pct[1]) / 100.0));
  return {n_train, n_tv - n_train, n - n_tv};
}

// Splits one stratum (class c from one source, file indices in path order) with its own
// seeded stream, so adding or removing a class or source leaves the others' splits alone.
// Files whose split the labeler fixed keep it; the others are split by the percentages, or all
// go to train for a class too small to split (train_only).
void split_stratum(Prep& P, int c, const std::string& source, std::vector<int>& v, bool train_only) {
  uint64_t src_hash = 0xcbf29ce484222325ull;
  for (char ch : source) src_hash = (src_hash ^ (uint8_t)ch) * 0x100000001b3ull;
  Rng r(mix_seed(P.opt.seed, (uint64_t)c, src_hash, 0x5B117ull));
  shuffle(v, r);
  const size_t n = v.size();
  size_t n_free = 0;
  for (int f : v) n_free += P.files[f].fixed_split < 0;
  const auto cnt_free = split_counts_of(n_free, P.opt.split);
  std::vector<int> sp(n);
  size_t n_train = 0;
  for (size_t i = 0, k = 0; i < n; ++i) {
    const int fixed = P.files[v[i]].fixed_split;
    sp[i] = fixed >= 0 ? fixed : train_only ? 0 : k < cnt_free[0] ? 0 : k < cnt_free[0] + cnt_free[1] ? 1 : 2;
    if (fixed < 0) ++k;
    n_train += sp[i] == 0;
  }
  // Nested subsets: the first 5% (at least one image) of the shuffled train list, then 20%.
  const size_t n5 = n_train ? std::max<size_t>(1, std::lround(n_train * 0.05)) : 0;
  const size_t n20 = n_train ? std::max<size_t>(n5, std::lround(n_train * 0.20)) : 0;
  const std::string& cname = P.class_name(c);
  if (n) P.class_counts[cname] = P.class_counts.value(cname, (size_t)0) + n;
  size_t cnt[3] = {0, 0, 0};
  for (size_t i = 0, t = 0; i < n; ++i) {
    const FileRec& f = P.files[v[i]];
    Sample s;
    s.path = f.rel;
    s.src = f.src;
    s.sha256 = f.sha;
    s.source = f.source;
    s.label = c;
    s.split = sp[i] == 0 ? "train" : sp[i] == 1 ? "val" : "test";
    s.subset = sp[i] == 0 ? (t < n5 ? 5 : t < n20 ? 20 : 100) : 100;
    ++cnt[sp[i]];
    if (sp[i] == 0) {
      ++t;
      P.train_of[c].push_back(v[i]);
      for (int ch = 0; ch < 3; ++ch) P.sum[ch] += f.sum[ch], P.sumsq[ch] += f.sumsq[ch];
      P.npx += f.npx;
    }
    P.rows.push_back(std::move(s));
  }
  for (int k = 0; k < 3; ++k)
    if (cnt[k]) {
      json& sc = P.split_class[k == 0 ? "train" : k == 1 ? "val" : "test"];
      sc[cname] = sc.value(cname, (size_t)0) + cnt[k];
    }
}

// The classes whose images (those prepare splits) cannot give every split with a share at least
// one: listed in the report, and kept in train alone or refused as the options say.
std::vector<bool> find_small_classes(Prep& P, const std::vector<int>& kept_files) {
  const size_t C = P.opt.labeler.classes.size();
  std::vector<size_t> n_free(C, 0), n_all(C, 0);
  for (int f : kept_files) {
    ++n_all[size_t(P.files[f].label)];
    n_free[size_t(P.files[f].label)] += P.files[f].fixed_split < 0;
  }
  std::vector<bool> small(C, false);
  std::string refused;
  for (size_t c = 0; c < C; ++c) {
    const auto k = split_counts_of(n_free[c], P.opt.split);
    bool too_small = n_all[c] == 0;
    for (int s = 0; s < 3; ++s) too_small = too_small || (n_free[c] > 0 && P.opt.split[s] > 0 && k[s] == 0);
    if (!too_small) continue;
    small[c] = true;
    const bool refuse = P.opt.small_classes == SmallClasses::kRefuse;
    P.small_classes.push_back({{"class", P.class_name(int(c))},
                               {"count", n_all[c]},
                               {"action", refuse     ? "refused"
                                          : n_all[c] ? "train only"
                                                     : "no images"}});
    refused += (refused.empty() ? "'" : ", '") + P.class_name(int(c)) + "' (" + std::to_string(n_all[c]) + ")";
    if (n_all[c] == 0 && !refuse)  // a class of a fixed list (--labels wbc14) this folder holds none of
      P.say("prepare: class '" + P.class_name(int(c)) + "' has no images here; it stays in the class list");
    else
      P.say("prepare: class '" + P.class_name(int(c)) + "' has " + std::to_string(n_all[c]) +
            " usable images, too few for a " + std::to_string(P.opt.split[0]) + "/" +
            std::to_string(P.opt.split[1]) + "/" + std::to_string(P.opt.split[2]) + " split" +
            (refuse ? "" : ": all go to train, none to val/test"));
  }
  if (!refused.empty() && P.opt.small_classes == SmallClasses::kRefuse)
    throw std::runtime_error(
        "prepare: too few usable images (after removing unreadable files and duplicates) to "
        "give each split at least one, in class(es) " +
        refused + "; add images, remove the class, or keep it in train alone with --small-classes train-only");
  return small;
}

// The stratified split with nested train subsets, and the train-only channel sums.
void split(Prep& P) {
  P.train_of.assign(P.opt.labeler.classes.size(), {});
  // Strata = (class, source): each split gets the same share of every class from every
  // source, so per-source recall (LMU vs PBC segmented neutrophils) is measurable.
  std::map<std::pair<int, std::string>, std::vector<int>> strata;  // file indices, path order
  std::vector<int> kept = P.kept;
  std::sort(kept.begin(), kept.end(), [&](int a, int b) {
    const FileRec &x = P.files[P.good[a]], &y = P.files[P.good[b]];
    return std::tie(x.src, x.rel) < std::tie(y.src, y.rel);
  });
  std::vector<int> kept_files;
  for (int k : kept) kept_files.push_back(P.good[k]);
  const std::vector<bool> small = find_small_classes(P, kept_files);
  for (int f : kept_files) strata[{P.files[f].label, P.files[f].source}].push_back(f);
  for (auto& [key, v] : strata) split_stratum(P, key.first, key.second, v, small[size_t(key.first)]);
}

// Mean and std per channel of the train split's real images; null when there is no train row.
std::pair<json, json> channel_stats(const Prep& P) {
  if (!P.npx) return {json(nullptr), json(nullptr)};
  json mean = json::array(), stdv = json::array();
  for (int ch = 0; ch < 3; ++ch) {
    const double m = P.sum[ch] / P.npx;
    mean.push_back(m);
    stdv.push_back(std::sqrt(std::max(0.0, P.sumsq[ch] / P.npx - m * m)));
  }
  return {mean, stdv};
}

// Optional offline top-up: TrivialAugmentWide variants of train images of the classes with
// fewer than opt.top_up, written under OUT/topup/ and added as train rows.
void top_up(Prep& P) {
  if (P.opt.top_up <= 0) return;
  struct Job {
    int c, k, from;
  };
  std::vector<Job> jobs;
  for (int c = 0; c < int(P.train_of.size()); ++c) {
    const int have = (int)P.train_of[c].size();
    for (int k = 0; have > 0 && have + k < P.opt.top_up; ++k) jobs.push_back({c, k, P.train_of[c][k % have]});
  }
  std::vector<Sample> extra(jobs.size());
  const std::vector<std::string> folder = class_folder_names(P.opt.labeler.classes);
  P.say("prepare: top-up writes " + std::to_string(jobs.size()) + " TrivialAugmentWide variants of train images");
  parallel_for(jobs.size(), P.opt.threads, [&](size_t j) {
    const Job& jb = jobs[j];
    const FileRec& f = P.files[jb.from];
    Image img = preprocess(load_image((fs::path(f.src) / f.rel).string()), P.opt.size);
    uint8_t fill[3];
    border_color(img, fill);
    Rng r(mix_seed(P.opt.seed, (uint64_t)jb.c, (uint64_t)jb.k, 0x70B0Bull));
    trivial_augment(img, r, fill);
    const std::string& cls = folder[size_t(jb.c)];
    const fs::path dir = fs::path(P.out_abs) / "topup" / cls;
    fs::create_directories(dir);
    const std::string name = fs::path(f.rel).stem().string() + "_ta" + std::to_string(jb.k) + ".png";
    write_png((dir / name).string(), img);
    Sample& s = extra[j];
    s.path = "topup/" + cls + "/" + name;
    s.src = P.out_abs;
    s.split = "train";
    s.sha256 = sha256_file((dir / name).string());
    s.source = f.source;
    s.label = jb.c;
    s.subset = 100;  // the 5% / 20% stages stay made of real images
  });
  P.n_topup = extra.size();
  for (auto& smp : extra) {
    const std::string& cn = P.class_name(smp.label);
    P.topup_counts[cn] = P.topup_counts.value(cn, (size_t)0) + 1;
    P.rows.push_back(std::move(smp));
  }
}

json report(const Prep& P) {
  json split_counts = {{"train", 0}, {"val", 0}, {"test", 0}};
  for (const auto& s : P.rows) split_counts[s.split] = split_counts[s.split].get<size_t>() + 1;
  split_counts["train_topup"] = P.n_topup;
  json subset_counts = {{"5", 0}, {"20", 0}, {"100", 0}};
  for (const auto& s : P.rows)
    if (s.split == "train" && s.path.rfind("topup/", 0) != 0)
      for (int p : {5, 20, 100})
        if (s.subset <= p) subset_counts[std::to_string(p)] = subset_counts[std::to_string(p)].get<size_t>() + 1;
  const auto [mean, stdv] = channel_stats(P);
  const PrepareOptions& opt = P.opt;
  json rep;
  rep["sources"] = P.sources;
  rep["classes"] = opt.labeler.classes;  // the model's output order; Sample::label indexes it
  rep["labels"] = opt.labeler.kind;
  rep["orientation_free"] = opt.labeler.orientation_free;  // train's rotate_flip=auto reads it
  rep["labeler_warnings"] = opt.labeler.warnings;
  rep["small_classes"] = P.small_classes;
  rep["seed"] = opt.seed;
  rep["split_percent"] = {opt.split[0], opt.split[1], opt.split[2]};
  rep["size"] = opt.size;
  rep["files_scanned"] = P.files.size();
  rep["unreadable"] = P.unreadable;
  rep["ignored"] = P.ignored;
  rep["unknown_label"] = P.unknown;
  rep["exact_duplicate_groups"] = P.exact_groups;
  rep["near_duplicate_groups"] = P.near_groups;
  rep["near_duplicate_pairs"] = P.near_pairs;
  rep["near_threshold"] = opt.near_threshold;
  rep["near_max_diff"] = opt.near_max_diff;
  rep["near_pairs"] = P.near_detail;
  rep["near_candidate_pairs"] = P.near_candidates;
  rep["near_hash"] = "64-bit DCT pHash of 32x32 luma (square-padded); near = Hamming distance <= near_threshold";
  rep["duplicate_groups"] = P.dup_detail;
  rep["label_conflicts"] = P.conflicts;
  rep["label_conflicts_detail"] = P.conflict_detail;
  rep["class_counts"] = P.class_counts;
  rep["split_class_counts"] = P.split_class;
  rep["split_counts"] = split_counts;
  rep["subset_counts"] = subset_counts;
  // No train rows (e.g. --split 0/0/100 for an external test set): no statistics to
  // give, and null makes read_stats fail loudly instead of handing out 0/1.
  rep["mean"] = mean;
  rep["std"] = stdv;
  rep["stats_from"] = P.npx ? "train split only, real images (no top-up), after pad + resize to size, pixel/255"
                            : "no train rows: use the statistics of the data the model was trained on";
  rep["top_up"] = opt.top_up;
  rep["topup_class_counts"] = P.topup_counts;  // split_class_counts.train counts real images only
  return rep;
}

}  // namespace

json prepare_dataset(const PrepareOptions& opt) {
  validate(opt);
  Prep P(opt);
  P.out_abs = absolute_path(opt.out);
  for (size_t i = 0; i < opt.labeler.warnings.size() && i < 10; ++i) P.say("prepare: " + opt.labeler.warnings[i]);
  if (opt.labeler.warnings.size() > 10)
    P.say("prepare: ... " + std::to_string(opt.labeler.warnings.size()) + " labeler warnings in all (report.json)");
  scan(P);
  check(P);
  deduplicate(P);
  split(P);
  fs::create_directories(opt.out);  // only once the data set is accepted: no empty --out on refusal
  top_up(P);
  write_manifest((fs::path(P.out_abs) / "manifest.csv").string(), P.rows, opt.labeler.classes);
  json rep = report(P);
  rep["wall_seconds"] = P.seconds();
  // json_text: a file name need not be UTF-8 (the manifest keeps its bytes; the report shows U+FFFD)
  write_text_atomic((fs::path(P.out_abs) / "report.json").string(), json_text(rep, 2) + "\n");
  P.say("prepare: wrote " + P.out_abs + "/manifest.csv (" + std::to_string(P.rows.size()) +
        " rows) and report.json in " + std::to_string(rep["wall_seconds"].get<double>()) + " s");
  return rep;
}

}  // namespace vit
