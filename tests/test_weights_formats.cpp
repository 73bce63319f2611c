// The weight-file readers against files PyTorch wrote (tools/gen_torchvision_ckpts.py):
// the torch.save zip + pickle reader, safetensors, and the fp16/bf16 conversions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "tests/weights_test_util.h"
#include "weights/safetensors.h"
#include "weights/torch_pth.h"

using namespace vit;
using namespace vit::testutil;

namespace {

std::vector<uint8_t> as_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

std::string pickle_error(const std::string& pkl) {
  auto b = as_bytes(pkl);
  return error_of([&] { parse_state_dict_pickle(b.data(), b.size(), "test.pkl"); });
}

}  // namespace

TEST(TorchPth, TinyMiscMatchesPyTorch) {
  // Views sharing one storage (transpose: non-contiguous; slice: storage offset), fp16,
  // bf16 and a 0-d tensor, with the values torch printed as float32.
  StateDict sd = read_pth(data_path("tiny_misc.pth"));
  auto expect = read_json(data_path("tiny_misc.json"));
  ASSERT_EQ(sd.size(), expect.size());
  for (auto it = expect.begin(); it != expect.end(); ++it) {
    SCOPED_TRACE(it.key());
    ASSERT_TRUE(sd.count(it.key()));
    const HostTensor& t = sd.at(it.key());
    EXPECT_EQ(t.shape, it.value()["shape"].get<std::vector<int64_t>>());
    auto vals = it.value()["values"].get<std::vector<double>>();
    ASSERT_EQ(t.data.size(), vals.size());
    // Exact: every value is representable in its dtype, and widening to fp32 is exact.
    for (size_t i = 0; i < vals.size(); ++i) EXPECT_EQ(t.data[i], float(vals[i])) << "element " << i;
  }
  EXPECT_EQ(sd.at("h").src_dtype, "float16");
  EXPECT_EQ(sd.at("bf").src_dtype, "bfloat16");
  EXPECT_TRUE(sd.at("s").shape.empty());
}

TEST(TorchPth, WrappedModelEntry) {
  StateDict sd = read_pth(data_path("tiny_wrapped.pth"));
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd.at("x").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(sd.at("x").data, std::vector<float>(4, 1.0f));
}

TEST(TorchPth, RefusesInt64WithKeyAndDtype) {
  std::string e = error_of([] { read_pth(data_path("tiny_int64.pth")); });
  EXPECT_NE(e.find("'idx'"), std::string::npos) << e;
  EXPECT_NE(e.find("int64"), std::string::npos) << e;
}

TEST(TorchPth, HostileArchiveNamesTheGlobal) {
  std::string e = error_of([] { read_pth(data_path("hostile_os_system.pth")); });
  EXPECT_NE(e.find("GLOBAL 'os.system'"), std::string::npos) << e;
  EXPECT_NE(e.find("hostile_os_system.pth"), std::string::npos) << e;
}

TEST(TorchPth, NotAZip) {
  std::string path = temp_path("notzip.pth");
  std::vector<uint8_t> junk(100, 'x');
  write_file_atomic(path, {{junk.data(), junk.size()}});
  std::string e = error_of([&] { read_pth(path); });
  EXPECT_NE(e.find("notzip.pth"), std::string::npos) << e;
  std::remove(path.c_str());
}

TEST(TorchPth, PthAndSafetensorsAgree) {
  // Two independent producers of the same weights: torch.save and a numpy writer.
  for (const char* name : {"tv_a", "tv_b"}) {
    SCOPED_TRACE(name);
    StateDict a = read_pth(data_path(std::string(name) + ".pth"));
    std::map<std::string, std::string> md;
    StateDict b = read_safetensors(data_path(std::string(name) + ".safetensors"), &md);
    EXPECT_EQ(md["format"], "pt");
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [k, t] : a) {
      ASSERT_TRUE(b.count(k)) << k;
      EXPECT_EQ(t.shape, b.at(k).shape) << k;
      EXPECT_EQ(t.data, b.at(k).data) << k;
    }
    auto refs = read_json(data_path("torchvision_refs.json"));
    const int depth = refs[name]["num_layers"];
    EXPECT_EQ(a.size(), size_t(4 + 12 * depth + 4));  // stem 4, 12 per layer, encoder.ln + head 4
    double sumsq = 0;
    for (float v : a.at("heads.head.weight").data) sumsq += double(v) * v;
    EXPECT_GT(sumsq, 0.0);  // the generator randomises the head: a zero head would hide mistakes
  }
}

// ---- the pickle VM on hand-written pickles ----

TEST(PickleVM, RefusesForbiddenGlobals) {
  for (const char* g :
       {"os\nsystem\n", "builtins\neval\n", "posix\nsystem\n", "subprocess\nPopen\n", "torch\nload\n"}) {
    std::string e = pickle_error(std::string("\x80\x02") + "c" + g + "X\x02\x00\x00\x00ls\x85R.");
    EXPECT_NE(e.find("GLOBAL"), std::string::npos) << e;
    EXPECT_NE(e.find("not allowed"), std::string::npos) << e;
    EXPECT_NE(e.find("offset 2"), std::string::npos) << e;
  }
  // timm's training checkpoints pickle their argparse.Namespace: refused, saying how to keep the weights
  const std::string e = pickle_error(std::string("\x80\x02") + "cargparse\nNamespace\n)\x81.");
  EXPECT_NE(e.find("GLOBAL 'argparse.Namespace' is not allowed"), std::string::npos) << e;
  EXPECT_NE(e.find("torch.save(torch.load(F, weights_only=False)['state_dict']"), std::string::npos) << e;
}

TEST(PickleVM, RefusesOpcodesOutsideTheSubset) {
  struct Case {
    std::string pkl, name, offset;
  };
  const std::vector<Case> cases = {
      {std::string("\x80\x02X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93.", 22), "STACK_GLOBAL", "offset 20"},
      {"\x80\x02(ios\nsystem\n.", "INST", "offset 3"},
      {"\x80\x02(o.", "OBJ", "offset 3"},
      {"\x80\x02\x81.", "NEWOBJ", "offset 2"},
      {"\x80\x02S'ls'\n.", "STRING", "offset 2"},
      {"\x80\x02P0\n.", "PERSID", "offset 2"},
      {"\x80\x02\xff.", "(unknown)", "offset 2"},
  };
  for (const auto& c : cases) {
    std::string e = pickle_error(c.pkl);
    EXPECT_NE(e.find(c.name), std::string::npos) << c.name << ": " << e;
    EXPECT_NE(e.find(c.offset), std::string::npos) << e;
  }
}

TEST(PickleVM, RefusesReduceOnStorageAndRebuildMisuse) {
  // REDUCE on a whitelisted storage class: GLOBAL alone is not permission to call it.
  std::string e = pickle_error("\x80\x02\x63torch\nFloatStorage\n)R.");
  EXPECT_NE(e.find("REDUCE on 'torch.FloatStorage'"), std::string::npos) << e;
  // _rebuild_tensor_v2 with arguments of the wrong kinds.
  e = pickle_error("\x80\x02\x63torch._utils\n_rebuild_tensor_v2\nK\x01\x85R.");
  EXPECT_NE(e.find("_rebuild_tensor_v2"), std::string::npos) << e;
}

TEST(PickleVM, HostileLengthsAndStructure) {
  // BINUNICODE claiming 4 GB: refused before any allocation.
  std::string e = pickle_error(std::string("\x80\x02X\xff\xff\xff\xff", 6));
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  // LONG1 wider than 64 bits.
  e = pickle_error(std::string("\x80\x02\x8a\x09", 4) + std::string(9, '\x01') + ".");
  EXPECT_NE(e.find("LONG1"), std::string::npos) << e;
  // No STOP.
  e = pickle_error("\x80\x02}");
  EXPECT_NE(e.find("without STOP"), std::string::npos) << e;
  // BINGET of a memo slot never stored.
  e = pickle_error("\x80\x02h\x05.");
  EXPECT_NE(e.find("memo index 5"), std::string::npos) << e;
  // A dict that contains itself: no leak, no recursion, just "not a state dict".
  e = pickle_error(std::string("\x80\x02}q\x00X\x01\x00\x00\x00", 10) + "ah" + std::string("\x00s.", 3));
  EXPECT_NE(e.find("not a state dict"), std::string::npos) << e;
  // 200k open MARKs, then 200k nested 1-tuples: bounded memory, a clear error.
  e = pickle_error("\x80\x02" + std::string(200000, '(') + ".");
  EXPECT_NE(e.find("open MARK"), std::string::npos) << e;
  e = pickle_error("\x80\x02N" + std::string(200000, '\x85') + ".");
  EXPECT_NE(e.find("top-level object is a tuple"), std::string::npos) << e;
  // Stack underflow.
  e = pickle_error("\x80\x02s.");
  EXPECT_NE(e.find("underflow"), std::string::npos) << e;
  e = pickle_error("");
  EXPECT_NE(e.find("without STOP"), std::string::npos) << e;
}

// ---- safetensors ----

namespace {

std::vector<uint8_t> make_st(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes, 0);
  for (int i = 0; i < 8; ++i) f[size_t(i)] = uint8_t(uint64_t(header.size()) >> (8 * i));
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

std::string st_error(const std::string& header, size_t data_bytes) {
  auto f = make_st(header, data_bytes);
  return error_of([&] { parse_safetensors(f.data(), f.size(), "x.safetensors"); });
}

}  // namespace

TEST(Safetensors, StrictValidation) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  auto f = make_st(ok, 8);
  EXPECT_EQ(parse_safetensors(f.data(), f.size(), "x").at("a").data.size(), 2u);
  struct Case {
    std::string header;
    size_t data;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8, "outside the data buffer"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12 bytes"},
      {R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8, "dtype I64"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, "overlaps"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, "unused bytes"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "trailing garbage"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "negative"},
      {R"({"a":{"dtype":"F32","shape":[2]}})", 8, "lacks"},
      {R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})", 4, "implausibly large"},
      {R"({"a": )", 8, "not valid JSON"},
      {R"([1,2])", 0, "not a JSON object"},
  };
  for (const auto& c : cases) {
    std::string e = st_error(c.header, c.data);
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.header << " -> " << e;
  }
  // Header length beyond the file.
  auto g = make_st(ok, 8);
  g[0] = 0xff;
  g[3] = 0x7f;
  std::string e = error_of([&] { parse_safetensors(g.data(), g.size(), "x"); });
  EXPECT_NE(e.find("exceeds the file"), std::string::npos) << e;
}

TEST(Safetensors, WriteReadRoundTripAllDtypes) {
  StateDict sd;
  sd["w"] = HostTensor{{2, 3}, {1.0f, -2.5f, 3.140625f, 0.0f, 65504.0f, -1e-3f}};
  sd["b"] = HostTensor{{1}, {0.5f}};
  std::string path = temp_path("rt.safetensors");
  for (auto dt : {SafetensorsDtype::F32, SafetensorsDtype::F16, SafetensorsDtype::BF16}) {
    write_safetensors(path, sd, dt, {{"k", "v"}});
    std::map<std::string, std::string> md;
    StateDict r = read_safetensors(path, &md);
    EXPECT_EQ(md.at("k"), "v");
    ASSERT_EQ(r.size(), 2u);
    for (const auto& [k, t] : sd) {
      EXPECT_EQ(r.at(k).shape, t.shape);
      for (size_t i = 0; i < t.data.size(); ++i) {
        float ref = t.data[i];
        // F32 is exact; F16 keeps 11 significant bits, BF16 8: relative error 2^-11, 2^-8.
        float tol =
            dt == SafetensorsDtype::F32 ? 0.0f : std::abs(ref) * (dt == SafetensorsDtype::F16 ? 4.9e-4f : 3.9e-3f);
        EXPECT_NEAR(r.at(k).data[i], ref, tol) << k << "[" << i << "]";
      }
    }
  }
  std::remove(path.c_str());
}

// `export --dtype f16` wrote a weight past 65504 as an infinity, and PyTorch loaded it as one with
// no word. It is refused naming the tensor and the element; nothing is written; bf16 holds it.
TEST(Safetensors, F16RefusesValuesBeyondItsRange) {
  StateDict sd;
  sd["heads.head.bias"] = HostTensor{{3}, {1.0f, 65504.0f, -70000.0f}};
  const std::string path = temp_path("f16range.safetensors");
  std::remove(path.c_str());
  const std::string e = error_of([&] { write_safetensors(path, sd, SafetensorsDtype::F16); });
  EXPECT_NE(e.find("'heads.head.bias' holds -70000"), std::string::npos) << e;
  EXPECT_NE(e.find("element 2"), std::string::npos) << e;
  EXPECT_FALSE(std::ifstream(path).good());
  write_safetensors(path, sd, SafetensorsDtype::BF16);
  EXPECT_NEAR(read_safetensors(path).at("heads.head.bias").data[2], -70000.0f, 70000.0f * 3.9e-3f);
  std::remove(path.c_str());
}

TEST(HalfFloat, KnownEncodings) {
  // Bit patterns from the IEEE 754 binary16 / bfloat16 definitions.
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);                      // rounds up to infinity
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);         // tie -> even (0)
  EXPECT_EQ(float_to_half(std::ldexp(3.0f, -25)), 0x0002);         // 1.5 ulp -> 2 (even)
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(NAN))));
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(half_to_float(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(half_to_float(0x7c00)));
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie -> even
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(bf16_to_float(0xc050), -3.25f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  // Every finite half survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(float_to_half(half_to_float(uint16_t(h))), h) << std::hex << h;
  }
}

TEST(TorchPth, ViewsOutsideTheirStorageAreRefused) {
  // (3, 2) with strides (2, 1) needs 6 elements of a 4-element storage; a 2^62 stride
  // makes the extent overflow 64 bits (UBSan in the fuzz build would flag the arithmetic).
  for (const char* f : {"tiny_bad_view.pth", "tiny_overflow_view.pth"}) {
    std::string e = error_of([&] { read_pth(data_path(f)); });
    EXPECT_NE(e.find("tensor 'w'"), std::string::npos) << e;
    EXPECT_NE(e.find("reaches past the end of its storage of 4 elements"), std::string::npos) << e;
  }
}
