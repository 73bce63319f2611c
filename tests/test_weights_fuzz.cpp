// Fuzzing the weight readers: truncations at every length, random byte flips and
// structural mutations of real files (torch.save zips, their data.pkl, safetensors,
// .vit). Each input must end in either a clean load or a std::runtime_error -- never a
// crash, a hang, another exception type or (in the ASan build, tests/weights_fuzz.cmake)
// a memory error or leak. The mutations come from a fixed-seed PRNG: the same cases
// every run, so a failure reproduces.
#include <gtest/gtest.h>
#include <zip.h>

#include <chrono>
#include <cstring>

#include "engine/model/vit.h"
#include "tests/weights_test_util.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"
#include "weights/torch_pth.h"

using namespace vit;
using namespace vit::testutil;

namespace {

// Outcome of one input: 0 loaded, 1 refused with runtime_error. Anything else fails.
int outcome(const std::function<void()>& fn, const std::string& what) {
  try {
    fn();
    return 0;
  } catch (const std::runtime_error&) {
    return 1;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-runtime_error: " << e.what();
    return 2;
  }
}

std::vector<uint8_t> zip_entry(const std::string& path, const std::string& suffix) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
  if (!z) throw std::runtime_error("cannot open " + path);
  std::vector<uint8_t> out;
  for (zip_int64_t i = 0; i < zip_get_num_entries(z, 0); ++i) {
    std::string n = zip_get_name(z, zip_uint64_t(i), 0);
    if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
      zip_stat_t st;
      zip_stat_index(z, zip_uint64_t(i), 0, &st);
      out.resize(st.size);
      zip_file_t* f = zip_fopen_index(z, zip_uint64_t(i), 0);
      zip_fread(f, out.data(), st.size);
      zip_fclose(f);
    }
  }
  zip_close(z);
  return out;
}

// One structural mutation: flip a byte, overwrite with a "special" value, insert,
// delete, or duplicate a short run (the classic AFL-style set).
std::vector<uint8_t> mutate(const std::vector<uint8_t>& in, MutationRng& rng) {
  std::vector<uint8_t> b = in;
  static const uint8_t special[] = {0x00, 0xff, 0x7f, 0x80, '(', '.', 'R', 'c', 'Q', 0x8a, 'X', 's', 'u', 't'};
  int k = 1 + int(rng.below(3));
  for (int j = 0; j < k && !b.empty(); ++j) {
    size_t at = rng.below(b.size());
    switch (rng.below(5)) {
      case 0:
        b[at] ^= uint8_t(1u << rng.below(8));
        break;
      case 1:
        b[at] = special[rng.below(sizeof special)];
        break;
      case 2:
        b.insert(b.begin() + long(at), special[rng.below(sizeof special)]);
        break;
      case 3:
        b.erase(b.begin() + long(at));
        break;
      default: {
        size_t len = std::min<size_t>(1 + rng.below(16), b.size() - at);
        std::vector<uint8_t> run(b.begin() + long(at), b.begin() + long(at + len));
        size_t to = rng.below(b.size());
        b.insert(b.begin() + long(to), run.begin(), run.end());
      }
    }
  }
  return b;
}

}  // namespace

TEST(WeightsFuzz, PthTruncatedAtEveryLength) {
  const auto file = bytes_of(data_path("tiny_misc.pth"));
  for (size_t n = 0; n < file.size(); ++n) {
    std::vector<uint8_t> b(file.begin(), file.begin() + long(n));  // own buffer: ASan sees overreads
    ASSERT_EQ(1, outcome([&] { read_pth_memory(b.data(), b.size(), "cut"); }, "length " + std::to_string(n)))
        << "a truncated archive loaded, length " << n;
  }
  EXPECT_NO_THROW(read_pth_memory(file.data(), file.size(), "whole"));
}

TEST(WeightsFuzz, PthByteFlipsAndMutations) {
  const auto file = bytes_of(data_path("tiny_misc.pth"));
  MutationRng rng(1);
  int refused = 0;
  const int kCases = 3000;
  for (int i = 0; i < kCases; ++i) {
    auto b = mutate(file, rng);
    refused += outcome([&] { read_pth_memory(b.data(), b.size(), "mutant"); }, "mutant " + std::to_string(i));
  }
  // Almost every mutation hits a CRC-checked entry or the zip structure; the few that
  // load touched bytes no reader depends on (e.g. a timestamp).
  EXPECT_GT(refused, kCases * 8 / 10);
}

TEST(WeightsFuzz, PickleTruncatedAtEveryLengthAndMutated) {
  // Every length of the small pickle (views, fp16, bf16, nested OrderedDicts); every
  // 5th of the real model's (each cut costs a parse of the prefix: quadratic).
  for (auto [file, step] : {std::pair<const char*, size_t>{"tiny_misc.pth", 1}, {"tv_a.pth", 5}}) {
    const auto pkl = zip_entry(data_path(file), "/data.pkl");
    ASSERT_GT(pkl.size(), 400u);
    EXPECT_NO_THROW(parse_state_dict_pickle(pkl.data(), pkl.size(), "whole"));
    for (size_t n = 0; n < pkl.size(); n += step) {
      std::vector<uint8_t> b(pkl.begin(), pkl.begin() + long(n));
      ASSERT_EQ(1, outcome([&] { parse_state_dict_pickle(b.data(), b.size(), "cut"); }, "length " + std::to_string(n)))
          << file << ": a truncated pickle parsed, length " << n;
    }
  }
  const auto pkl = zip_entry(data_path("tv_a.pth"), "/data.pkl");
  MutationRng rng(2);
  for (int i = 0; i < 3000; ++i) {
    auto b = mutate(pkl, rng);
    outcome([&] { parse_state_dict_pickle(b.data(), b.size(), "mutant"); }, "mutant " + std::to_string(i));
  }
}

TEST(WeightsFuzz, HostilePicklesInsideArchives) {
  // A real archive whose data.pkl is replaced: the zip layer is fine, the pickle is not.
  const auto misc = bytes_of(data_path("hostile_os_system.pth"));
  EXPECT_EQ(1, outcome([&] { read_pth_memory(misc.data(), misc.size(), "hostile"); }, "hostile"));
  // Views past their storage, one with a stride whose extent overflows 64 bits.
  for (const char* f : {"tiny_bad_view.pth", "tiny_overflow_view.pth"}) {
    const auto b = bytes_of(data_path(f));
    EXPECT_EQ(1, outcome([&] { read_pth_memory(b.data(), b.size(), f); }, f));
  }
  const std::vector<std::string> pickles = {
      "\x80\x02"
      "cbuiltins\neval\nX\x01\x00\x00\x00"
      "1\x85R.",
      "\x80\x02"
      "cos\nsystem\n)R.",
      "\x80\x02" + std::string(100000, ']') + ".",
      "\x80\x02" + std::string(100000, '(') + "t.",
      std::string("\x80\x02X\xf0\xff\xff\x7f", 7),
  };
  for (const auto& p : pickles) {
    std::vector<uint8_t> b(p.begin(), p.end());
    EXPECT_EQ(1, outcome([&] { parse_state_dict_pickle(b.data(), b.size(), "hostile"); }, "hostile pickle"));
  }
}

TEST(WeightsFuzz, SafetensorsTruncatedAndMutated) {
  const auto file = bytes_of(data_path("tv_a.safetensors"));
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= uint64_t(file[size_t(i)]) << (8 * i);
  // Every length through the header and the first tensors, then every 97th byte: each
  // cut past the header costs a JSON parse, and the data region is uniform.
  for (size_t n = 0; n < file.size(); n += (n < 8 + hlen + 512 ? 1 : 97)) {
    std::vector<uint8_t> b(file.begin(), file.begin() + long(n));
    ASSERT_EQ(1, outcome([&] { parse_safetensors(b.data(), b.size(), "cut"); }, "length " + std::to_string(n)))
        << "a truncated safetensors file loaded, length " << n;
  }
  // Mutations inside the header (the data region has no checksum in this format, so a
  // flipped weight byte loads by design).
  std::vector<uint8_t> head(file.begin(), file.begin() + long(8 + hlen));
  MutationRng rng(3);
  for (int i = 0; i < 600; ++i) {
    auto h = mutate(head, rng);
    std::vector<uint8_t> b = h;
    b.insert(b.end(), file.begin() + long(8 + hlen), file.end());
    outcome([&] { parse_safetensors(b.data(), b.size(), "mutant"); }, "mutant " + std::to_string(i));
  }
}

TEST(WeightsFuzz, VitEveryTruncationAndEveryByteFlipIsRefused) {
  // A deliberately tiny model (about 5 KB on disk, mostly header) so that every byte can be tried.
  ViTConfig cfg;
  cfg.name = "fuzz";
  cfg.image_size = 8, cfg.patch = 4, cfg.dim = 4, cfg.depth = 1, cfg.heads = 2, cfg.mlp_dim = 4, cfg.num_classes = 2;
  ViT m(cfg);
  m.init(5);
  ModelMeta meta;
  meta.class_names = {"x", "y"};
  const std::string path = temp_path("fuzz.vit");
  save_model(path, m, meta);
  const auto file = bytes_of(path);
  EXPECT_NO_THROW(load_model(path));
  for (size_t n = 0; n < file.size(); ++n) {
    std::vector<uint8_t> b(file.begin(), file.begin() + long(n));
    ASSERT_EQ(1, outcome([&] { load_model_memory(b.data(), b.size(), "cut"); }, "length " + std::to_string(n)))
        << "truncated at " << n << " loaded";
  }
  // Every byte is covered by a check (magic, version, header hash, zero padding,
  // tensor hashes, exact length), so every single flip must be refused.
  for (size_t at = 0; at < file.size(); ++at) {
    auto b = file;
    b[at] ^= 0x20;
    ASSERT_EQ(1, outcome([&] { load_model_memory(b.data(), b.size(), "flip"); }, "flip " + std::to_string(at)))
        << "flip at byte " << at << " loaded";
  }
  // And the file path once, for a cut file on disk.
  const std::string cut = temp_path("fuzz_cut.vit");
  write_file_atomic(cut, {{file.data(), file.size() / 2}});
  EXPECT_EQ(1, outcome([&] { load_model(cut); }, "cut file"));
  std::remove(cut.c_str());
  std::remove(path.c_str());
}
