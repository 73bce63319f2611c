// Manifest I/O, the threaded loader (determinism, resume, balancing, errors) and packs.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "engine/data/dataset.h"
#include "engine/data/pack.h"
#include "engine/wbc/app.h"
#include "engine/wbc/taxonomy.h"
#include "tests/data_test_util.h"

using namespace vit;
using namespace vit::testutil;

namespace {

// n noise images of 16x16 on disk, label i % classes (or a given list).
struct Files {
  TempDir dir{"loader"};
  std::vector<Sample> samples;
  std::vector<Image> pixels;
  explicit Files(int n, std::vector<int> labels = {}) {
    for (int i = 0; i < n; ++i) {
      Image im = noise_image(16, 16, 100 + i, 60 + 7 * i % 150);
      const std::string name = "img_" + std::to_string(i) + ".png";
      write_png((dir.path / name).string(), im);
      Sample s;
      s.path = name;
      s.src = dir.path.string();
      s.split = "train";
      s.sha256 = "x";
      s.source = "synthetic";
      s.label = labels.empty() ? i % 3 : labels[i];
      samples.push_back(s);
      pixels.push_back(im);
    }
  }
};

LoaderConfig cfg16(bool aug) {
  LoaderConfig c;
  c.batch_size = 4;
  c.image_size = 16;
  c.aug.enabled = aug;
  c.aug.trivial_augment = aug;
  c.seed = 42;
  return c;
}

std::vector<Batch> epoch(Loader& l, int e, size_t skip = 0) {
  l.start_epoch(e, skip);
  std::vector<Batch> out;
  Batch b;
  while (l.next(b)) out.push_back(b);
  return out;
}

bool same(const Batch& a, const Batch& b) {
  return a.n == b.n && a.images == b.images && a.labels == b.labels && a.index == b.index;
}

}  // namespace

TEST(DataManifest, RoundTripAndErrorsNameFileAndLine) {
  TempDir d("manifest");
  std::vector<Sample> rows(2);
  rows[0] = {"a/b,c.jpg", "/data/x", "train", "abc", "pbc", class_index("Basophil"), 5};
  rows[1] = {"d.jpg", "/data/y", "test", "def", "aml-lmu", class_index("Myeloblast"), 100};
  const std::string p = (d.path / "m.csv").string();
  write_manifest(p, rows, wbc::class_names());
  Manifest m = read_manifest(p);
  ASSERT_EQ(m.samples.size(), 2u);
  EXPECT_EQ(m.samples[0].path, "a/b,c.jpg");  // quoted field survives
  EXPECT_EQ(m.samples[0].subset, 5);
  EXPECT_EQ(m.samples[1].label, class_index("Myeloblast"));
  EXPECT_EQ(m.samples[1].full_path(), "/data/y/d.jpg");
  EXPECT_EQ(read_manifest(p, "/elsewhere").samples[0].full_path(), "/elsewhere/a/b,c.jpg");
  std::ofstream(d.path / "bad.csv") << "path,label,split,sha256\nx.jpg,Basophil,train,1\ny.jpg,Unicorn,train,2\n";
  try {
    read_manifest((d.path / "bad.csv").string());
    FAIL() << "no throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.csv:3: unknown class 'Unicorn'"), std::string::npos) << e.what();
  }
  std::ofstream(d.path / "bad2.csv") << "path,label,sha256\n";
  EXPECT_THROW(read_manifest((d.path / "bad2.csv").string()), std::runtime_error);
  EXPECT_THROW(read_stats((d.path / "bad2.csv").string()), std::runtime_error);
}

TEST(DataLoader, BatchesHoldNormalisedPixels) {
  Files f(5);
  DataStats st;
  st.mean[0] = 0.5f, st.std[0] = 0.25f;
  LoaderConfig c = cfg16(false);
  c.shuffle = false;
  Loader l(f.samples, st, c);
  EXPECT_EQ(l.batches_per_epoch(), 2u);  // 5 images, batch 4, keep the last partial batch
  auto bs = epoch(l, 0);
  ASSERT_EQ(bs.size(), 2u);
  EXPECT_EQ(bs[1].n, 1);
  ASSERT_EQ(bs[0].images.size(), 4u * 3 * 16 * 16);
  // Image 1, channel 0, pixel (2, 3): hand formula (v/255 - 0.5)/0.25; channel 1 uses mean 0, std 1.
  const Image& im = f.pixels[1];
  const size_t px = 2 * 16 + 3;
  EXPECT_NEAR(bs[0].images[1 * 768 + px], (im.rgb[px * 3] / 255.f - 0.5f) / 0.25f, 1e-5f);
  EXPECT_NEAR(bs[0].images[1 * 768 + 256 + px], im.rgb[px * 3 + 1] / 255.f, 1e-6f);
  EXPECT_EQ(bs[0].labels[1], 1);
  c.drop_last = true;
  Loader l2(f.samples, st, c);
  EXPECT_EQ(l2.batches_per_epoch(), 1u);
}

TEST(DataLoader, DeterministicAcrossRunsAndThreadCountsAndResumable) {
  Files f(22);
  LoaderConfig c = cfg16(true);
  c.threads = 1;
  Loader a(f.samples, {}, c);
  c.threads = 3;
  c.prefetch = 1;
  Loader b(f.samples, {}, c);
  auto ea = epoch(a, 3), eb = epoch(b, 3);
  ASSERT_EQ(ea.size(), 6u);
  for (size_t i = 0; i < ea.size(); ++i) EXPECT_TRUE(same(ea[i], eb[i])) << i;
  // start_epoch(e, k) yields exactly batches k.. of the full epoch.
  auto resumed = epoch(b, 3, 2);
  ASSERT_EQ(resumed.size(), 4u);
  for (size_t i = 0; i < resumed.size(); ++i) EXPECT_TRUE(same(resumed[i], ea[i + 2])) << i;
  // Another epoch: another order and other augmentations; every image once per epoch.
  auto e4 = epoch(a, 4);
  EXPECT_FALSE(same(ea[0], e4[0]));
  std::vector<int> seen(22, 0);
  for (auto& bt : e4)
    for (size_t k : bt.index) seen[k]++;
  EXPECT_EQ(seen, std::vector<int>(22, 1));
}

TEST(DataLoader, BalancedSamplerEqualisesClasses) {
  std::vector<int> labels(100, 0);
  for (int i = 90; i < 100; ++i) labels[i] = 1;  // 90 vs 10
  Files f(100, labels);
  LoaderConfig c = cfg16(false);
  c.balanced = true;
  Loader l(f.samples, {}, c);
  size_t ones = 0, total = 0;
  for (int e = 0; e < 20; ++e)
    for (size_t k : l.epoch_order(e)) ones += labels[k], ++total;
  // Weight 1/n per class -> 50% class 1 expected; 2000 draws, sd ~1.1%: allow 5%.
  EXPECT_NEAR((double)ones / total, 0.5, 0.05);
  c.balance_power = 0.5f;  // (1/n)^0.5: class 1 gets 10/sqrt(10) vs 90/sqrt(90) -> 0.25
  Loader h(f.samples, {}, c);
  ones = total = 0;
  for (int e = 0; e < 20; ++e)
    for (size_t k : h.epoch_order(e)) ones += labels[k], ++total;
  EXPECT_NEAR((double)ones / total, 0.25, 0.05);
}

TEST(DataLoader, UnreadableImageThrowsNamingTheFile) {
  Files f(6);
  write_bytes(f.dir.path / "img_4.png", {1, 2, 3});
  LoaderConfig c = cfg16(false);
  c.shuffle = false;
  Loader l(f.samples, {}, c);
  l.start_epoch(0);
  Batch b;
  EXPECT_TRUE(l.next(b));
  try {
    l.next(b);
    FAIL() << "no throw";
  } catch (const ImageError& e) {
    EXPECT_NE(std::string(e.what()).find("img_4.png"), std::string::npos) << e.what();
  }
}

// An epoch started without images (data_on_device) describes the very batches a loading epoch
// makes: same indices and labels, and each image's draw, applied with apply_augment, gives the
// loaded pixels. The GPU kernel then only has to match apply_augment (tests/test_augment_emu.cpp).
TEST(DataLoader, EpochWithoutImagesDescribesTheSameBatches) {
  Files f(11);
  LoaderConfig c = cfg16(true);
  c.aug.trivial_augment = false;  // what data_on_device allows: augment none | light
  c.aug.blur_prob = 0;
  c.balanced = true;  // the sampler too is shared
  const DataStats st{{0.5f, 0.4f, 0.45f}, {0.2f, 0.25f, 0.3f}};
  Loader l(f.samples, st, c);
  auto loaded = epoch(l, 2, 1);
  l.start_epoch(2, 1, /*load_images=*/false);
  Batch b;
  size_t k = 0, per = 3 * 16 * 16;
  for (; l.next(b); ++k) {
    ASSERT_LT(k, loaded.size());
    EXPECT_TRUE(b.images.empty());
    EXPECT_EQ(b.index, loaded[k].index);
    EXPECT_EQ(b.labels, loaded[k].labels);
    ASSERT_EQ(b.aug.size(), size_t(b.n));
    std::vector<float> made(b.n * per);
    for (int i = 0; i < b.n; ++i) {
      EXPECT_TRUE(b.aug[i].geometry || b.aug[i].color) << "drew nothing";
      Image img = f.pixels[b.index[i]];
      apply_augment(img, b.aug[i]);
      to_chw_normalized(img, st.mean, st.std, made.data() + i * per);
    }
    EXPECT_EQ(made, loaded[k].images) << "batch " << k;
  }
  EXPECT_EQ(k, loaded.size());
}

// Data parallelism: the parts N ranks load of each batch, put side by side, are the batch one
// loader yields (same images, same augmentation, same labels); a short last batch that N does not
// divide is split as evenly as it goes; evaluation's whole-batch shards deal batch b to rank b % N.
TEST(DataLoader, ShardsPartitionEveryBatchAndDealWholeBatches) {
  Files f(14);  // batches of 4: 4, 4, 4, 2
  LoaderConfig c = cfg16(true);
  c.threads = 2;
  Loader one(f.samples, {}, c);
  const auto full = epoch(one, 3);
  ASSERT_EQ(full.size(), 4u);
  const int N = 3;
  std::vector<std::vector<Batch>> parts;
  for (int r = 0; r < N; ++r) {
    LoaderConfig cr = c;
    cr.shard_rank = r;
    cr.shard_count = N;
    Loader l(f.samples, {}, cr);
    EXPECT_EQ(l.batches_per_epoch(), full.size());
    parts.push_back(epoch(l, 3));
  }
  const size_t per = size_t(3) * 16 * 16;
  for (size_t b = 0; b < full.size(); ++b) {
    Batch joined;
    for (int r = 0; r < N; ++r) {
      const Batch& p = parts[size_t(r)].at(b);
      EXPECT_EQ(p.global_n, full[b].n);
      // rank r takes [m r / N, m (r+1) / N) of the batch's m images
      EXPECT_EQ(p.n, full[b].n * (r + 1) / N - full[b].n * r / N) << "batch " << b << " rank " << r;
      joined.n += p.n;
      joined.images.insert(joined.images.end(), p.images.begin(), p.images.begin() + size_t(p.n) * per);
      joined.labels.insert(joined.labels.end(), p.labels.begin(), p.labels.begin() + p.n);
      joined.index.insert(joined.index.end(), p.index.begin(), p.index.begin() + p.n);
    }
    EXPECT_TRUE(same(joined, full[b])) << "batch " << b;
  }
  // evaluation: whole batches, batch b on rank b % 2
  LoaderConfig ce = eval_loader_config(16, 4, 1);
  Loader all(f.samples, {}, ce);
  const auto whole = epoch(all, 0);
  for (int r = 0; r < 2; ++r) {
    ce.shard_rank = r;
    ce.shard_count = 2;
    ce.shard_whole_batches = true;
    Loader l(f.samples, {}, ce);
    const auto mine = epoch(l, 0);
    ASSERT_EQ(mine.size(), 2u);
    for (size_t j = 0; j < mine.size(); ++j) EXPECT_TRUE(same(mine[j], whole[2 * j + size_t(r)]));
  }
  c.shard_rank = 3;
  c.shard_count = 3;
  EXPECT_THROW(Loader(f.samples, {}, c), std::invalid_argument);
}

TEST(DataPack, RoundTripMatchesFiles) {
  Files f(9);
  const std::string p = (f.dir.path / "train.pack").string();
  write_pack(p, f.samples, wbc::class_names(), 16, 2, "train");
  auto pack = std::make_shared<PackFile>(p);
  ASSERT_EQ(pack->count(), 9u);
  EXPECT_EQ(pack->size(), 16);
  pack->verify();
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_EQ(pack->label((int)i), f.samples[i].label);
    EXPECT_TRUE(std::equal(f.pixels[i].rgb.begin(), f.pixels[i].rgb.end(), pack->image(i))) << i;
  }
  EXPECT_EQ(pack->paths()[3], "img_3.png");
  // Same seed, same augmentation: the pack-backed loader gives the file loader's batches.
  Loader a(f.samples, {}, cfg16(true)), b(pack, {}, cfg16(true));
  auto ea = epoch(a, 1), eb = epoch(b, 1);
  ASSERT_EQ(ea.size(), eb.size());
  for (size_t i = 0; i < ea.size(); ++i) EXPECT_TRUE(same(ea[i], eb[i])) << i;
  LoaderConfig wrong = cfg16(false);
  wrong.image_size = 32;
  EXPECT_THROW(Loader(pack, {}, wrong), std::invalid_argument);
}

// `vitengine pack --manifest M --out M` renamed the pack over the manifest: prepare's output was
// gone. It is refused as an argument error (exit 2), and the manifest is left byte for byte.
TEST(DataPack, CliRefusesToPackOverItsManifest) {
  Files f(3);
  const std::string man = (f.dir.path / "manifest.csv").string(), log = (f.dir.path / "log.txt").string();
  write_manifest(man, f.samples, wbc::class_names());
  const auto before = read_bytes(man);
  const std::string cmd = std::string(VITENGINE_BINARY) + " pack --size 16 --manifest " + man + " --out " +
                          (f.dir.path / "." / "manifest.csv").string() + " > " + log + " 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 2);
  EXPECT_EQ(read_bytes(man), before);
  std::ifstream in(log);
  const std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(said.find("is the manifest being packed itself"), std::string::npos) << said;
}

// A manifest whose src column is empty names its files relative to its own folder, as train and
// eval read it (tests/fixtures/quickstart is one). `pack --manifest DIR/manifest.csv` looked for
// them in the working directory instead and stopped at the first with "cannot open file".
TEST(DataPack, CliFindsAManifestsRelativePathsBesideIt) {
  Files f(3);
  std::vector<Sample> rows = f.samples;
  for (Sample& s : rows) s.src.clear();
  const std::string man = (f.dir.path / "manifest.csv").string(), pack = (f.dir.path / "train.pack").string();
  write_manifest(man, rows, wbc::class_names());
  const std::string cmd = "cd / && " + std::string(VITENGINE_BINARY) + " pack --size 16 --manifest " + man +
                          " --out " + pack + " > /dev/null 2>&1";
  ASSERT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 0);
  PackFile pf(pack);
  ASSERT_EQ(pf.count(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(std::equal(f.pixels[i].rgb.begin(), f.pixels[i].rgb.end(), pf.image(i))) << i;
}

TEST(DataPack, CorruptOrMismatchedPacksFailClearly) {
  Files f(3);
  const std::string p = (f.dir.path / "x.pack").string();
  write_pack(p, f.samples, wbc::class_names(), 16);
  const auto good = read_bytes(p);
  // `pack --check DIR` said only "DIR: mmap failed".
  try {
    PackFile dir(f.dir.path.string());
    ADD_FAILURE() << "a folder opened as a pack";
  } catch (const PackError& e) {
    EXPECT_NE(std::string(e.what()).find(f.dir.path.string() + ": a folder, not a pack file"), std::string::npos)
        << e.what();
  }
  auto expect_error = [&](std::vector<uint8_t> bytes, const std::string& want) {
    const std::string q = (f.dir.path / "bad.pack").string();
    write_bytes(q, bytes);
    try {
      PackFile pf(q);
      pf.verify();
      ADD_FAILURE() << "no error for: " << want;
    } catch (const PackError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.pack"), std::string::npos) << e.what();
    }
  };
  auto b = good;
  b.resize(b.size() - 10);
  expect_error(b, "truncated");
  b = good;
  b[0] = 'X';
  expect_error(b, "bad magic");
  b = good;
  b[8] = 2;  // version
  expect_error(b, "version 2");
  b = good;
  b[64 + 3 * 16 * 16 * 3] ^= 1;  // first label
  expect_error(b, "checksum");
  b = good;
  b[100] ^= 0x40;  // an image byte: found by verify()
  expect_error(b, "image data checksum");
  b = good;
  b[32] = 13;  // num_classes
  expect_error(b, "13 classes");
  expect_error({'V', 'I'}, "shorter than the header");
}
