// Model-level checks the PyTorch parity files cannot cover: the backward pass with
// dropout on (the masks come from our counter hash, which torch does not share),
// config validation, and the attention probabilities exposed to students.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <vector>

#include "engine/model/vit.h"

namespace {

vit::ViTConfig tiny(float dropout) {
  vit::ViTConfig c;
  c.name = "tiny";
  c.image_size = 16, c.patch = 8, c.dim = 12, c.depth = 2, c.heads = 3, c.mlp_dim = 20, c.num_classes = 4;
  c.dropout = dropout;
  return c;
}

}  // namespace

namespace {
// With fixed dropout / drop-path seeds the loss is a smooth function of the parameters, so the
// directional derivative from central differences must equal grad . d. The model runs in float32:
// h = 1e-2 and 5e-3 combined by Richardson extrapolation, 2e-3 relative tolerance (float rounding
// ~1e-6 / h; the h^2 term, ~3e-3 here, cancels).
void check_directional_derivative(float dropout, float drop_path, int B) {
  vit::ViT m(tiny(dropout));
  m.init(7);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0, 0.3f);
  for (auto& p : m.params())  // also randomise the zero-initialised head and class token
    if (p.name == "heads.head.weight" || p.name == "class_token")
      for (size_t i = 0; i < p.numel; i++) m.param_ptr(p.name)[i] = nd(rng);
  std::vector<float> x(B * 3 * 16 * 16);
  for (auto& v : x) v = nd(rng) * 3;
  std::vector<int> y(B);
  for (int i = 0; i < B; i++) y[i] = (i * 3 + 1) % 4;
  vit::ForwardOptions opt;
  opt.training = true;
  opt.dropout_seed = 99;
  opt.drop_path = drop_path;
  auto L = [&] {
    m.forward(x.data(), B, opt);
    return (double)m.loss(y.data(), 0.1f);
  };
  L();
  m.zero_grad();
  m.backward();
  const size_t n = m.num_params();
  std::vector<float> d(n), p0(m.param_data(), m.param_data() + n), g(m.grad_data(), m.grad_data() + n);
  for (auto& v : d) v = nd(rng);
  double gd = 0;
  for (size_t i = 0; i < n; i++) gd += (double)g[i] * d[i];
  auto central = [&](double h) {
    for (size_t i = 0; i < n; i++) m.param_data()[i] = p0[i] + (float)(h * d[i]);
    double lp = L();
    for (size_t i = 0; i < n; i++) m.param_data()[i] = p0[i] - (float)(h * d[i]);
    return (lp - L()) / (2 * h);
  };
  // Richardson: (4 D(h/2) - D(h)) / 3 cancels the h^2 truncation term of the central difference
  const double fd = (4 * central(5e-3) - central(1e-2)) / 3;
  EXPECT_NE(gd, 0.0);
  EXPECT_NEAR(fd, gd, 2e-3 * std::fabs(gd) + 1e-5);
  // The masks are on: a different seed gives a different loss.
  for (size_t i = 0; i < n; i++) m.param_data()[i] = p0[i];
  double l1 = L();
  opt.dropout_seed = 100;
  EXPECT_NE(l1, L());
}
}  // namespace

TEST(Model, DirectionalDerivativeWithDropout) { check_directional_derivative(0.3f, 0.0f, 3); }

TEST(Model, DirectionalDerivativeWithDropPath) {
  // tiny() has 2 blocks: block 0 never drops, block 1 drops samples with rate 0.5. The check
  // only means something if the seed drops some samples and keeps others in block 1.
  const int B = 6;
  int dropped = 0;
  for (int branch = 0; branch < 2; branch++)
    for (int b = 0; b < B; b++) dropped += !vit::cpu::dropout_keep(vit::drop_path_seed(99, 1, branch), b, 0.5f);
  ASSERT_GT(dropped, 0);
  ASSERT_LT(dropped, 2 * B);
  check_directional_derivative(0.0f, 0.5f, B);
}

TEST(Model, DropPathDropsWholeSamplesOfTheLastBlock) {
  // A sample whose last-block branches are both dropped must come out exactly as from the model
  // without that block's branches, built independently by zeroing the block's output projections
  // (each branch then adds 0 to the residual stream).
  const int B = 16;
  vit::ViT m(tiny(0.0f));
  m.init(3);
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 0.5f);
  for (const char* name : {"heads.head.weight", "class_token"})
    for (size_t i = 0; i < m.param(name).numel; i++) m.param_ptr(name)[i] = nd(rng);
  std::vector<float> x(B * 3 * 16 * 16);
  for (auto& v : x) v = nd(rng) * 3;
  vit::ForwardOptions opt;
  opt.training = true;
  opt.dropout_seed = 5;
  opt.drop_path = 0.5f;
  const int C = 4;
  const float* t = m.forward(x.data(), B, opt);
  const std::vector<float> train(t, t + B * C);
  vit::ViT cut(tiny(0.0f));
  std::copy(m.param_data(), m.param_data() + m.num_params(), cut.param_data());
  for (const char* name : {"encoder.layers.encoder_layer_1.self_attention.out_proj.weight",
                           "encoder.layers.encoder_layer_1.self_attention.out_proj.bias",
                           "encoder.layers.encoder_layer_1.mlp.3.weight", "encoder.layers.encoder_layer_1.mlp.3.bias"})
    std::fill(cut.param_ptr(name), cut.param_ptr(name) + cut.param(name).numel, 0.0f);
  const float* without = cut.forward(x.data(), B, {});
  int both_dropped = 0;
  for (int b = 0; b < B; b++) {
    const bool k0 = vit::cpu::dropout_keep(vit::drop_path_seed(5, 1, 0), b, 0.5f);
    const bool k1 = vit::cpu::dropout_keep(vit::drop_path_seed(5, 1, 1), b, 0.5f);
    if (k0 || k1) continue;
    ++both_dropped;
    for (int c = 0; c < C; c++) EXPECT_NEAR(train[b * C + c], without[b * C + c], 1e-5) << "sample " << b;
  }
  EXPECT_GT(both_dropped, 0) << "seed 5 drops no sample in both branches: pick another";
}

TEST(Model, AttentionProbabilitiesAreRowStochastic) {
  vit::ViT m(tiny(0.0f));
  m.init(3);
  std::vector<float> x(2 * 3 * 16 * 16, 0.5f);
  for (size_t i = 0; i < x.size(); i++) x[i] = std::sin(0.1f * i);
  m.forward(x.data(), 2);
  const int N = m.config().seq_len(), H = m.config().heads;
  for (int l = 0; l < m.config().depth; l++) {
    const float* P = m.attention_probs(l);
    for (int r = 0; r < 2 * H * N; r++) {
      double s = 0;
      for (int j = 0; j < N; j++) {
        EXPECT_GE(P[r * N + j], 0.f);
        s += P[r * N + j];
      }
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
  }
  EXPECT_THROW(m.attention_probs(2), std::out_of_range);
}

TEST(Model, ConfigValidationNamesTheField) {
  vit::ViTConfig c = tiny(0);
  c.heads = 5;  // 12 % 5 != 0
  try {
    c.validate();
    FAIL() << "expected an exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("heads"), std::string::npos) << e.what();
  }
  EXPECT_THROW(vit::ViTConfig::preset("vit_h14"), std::invalid_argument);
  auto b = vit::ViTConfig::preset("vit_b16");
  EXPECT_EQ(b.dim, 768);
  EXPECT_EQ(b.depth, 12);
  EXPECT_EQ(b.heads, 12);
  EXPECT_EQ(b.mlp_dim, 3072);
  EXPECT_EQ(b.num_classes, 14);
  EXPECT_FLOAT_EQ(b.dropout, 0.1f);
  vit::ViT m(b);
  EXPECT_EQ(m.num_params(), 85809422u);  // torchvision vit_b_16 with a 14-class head: 85,798,656 + 10,766
}

// `vitengine bench --model vit_h14` (or a .vit path) exited 1, a run-time failure, where the README
// promises exit 2 and one line for a wrong argument; the line names the presets it knows.
TEST(Model, BenchRefusesAnUnknownPresetAsAnArgumentError) {
  const std::string log = ::testing::TempDir() + "bench_preset.log";
  const std::string cmd = std::string(VITENGINE_BINARY) + " bench --model vit_h14 --steps 1 > " + log + " 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 2);
  std::ifstream in(log);
  const std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* name : {"vit_h14", "vit_ti16", "vit_s16", "vit_b16"})
    EXPECT_NE(said.find(name), std::string::npos) << name << " in: " << said;
  std::remove(log.c_str());
}

TEST(Model, ScaledAdamWFreezesAndScalesPerTensor) {
  // Fine-tuning's optimizer step against whole-arena AdamW steps on copies of the model:
  // a tensor at scale s must end exactly where a plain step at lr * s puts it, a tensor at
  // scale 0 must not move (nor its moments), and the clipping norm covers live tensors only.
  vit::ViT m(tiny(0.0f));
  m.init(3);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1.0f);
  const size_t n = m.num_params();
  for (size_t i = 0; i < n; ++i) m.grad_data()[i] = nd(rng);
  vit::ViT full(tiny(0.0f)), half(tiny(0.0f));  // references: every tensor at lr and at lr / 2
  for (vit::ViT* r : {&full, &half}) std::copy(m.param_data(), m.param_data() + 4 * n, r->param_data());
  std::vector<float> scale;
  double live_ss = 0;
  for (size_t i = 0; i < m.params().size(); ++i) {
    const auto& p = m.params()[i];
    scale.push_back(i % 3 == 0 ? 0.0f : (i % 3 == 1 ? 1.0f : 0.5f));
    if (scale.back() > 0)
      for (size_t k = 0; k < p.numel; ++k) live_ss += double(m.grad_data()[p.offset + k]) * m.grad_data()[p.offset + k];
  }
  const std::vector<float> before(m.param_data(), m.param_data() + 4 * n);
  vit::cpu::AdamWParams hp;
  hp.lr = 1e-2f, hp.weight_decay = 0.1f, hp.step = 1;
  // no clipping here (clip 0), so the reference steps see the same gradient scale
  EXPECT_NEAR(m.adamw_step_scaled(hp, 0.0f, scale), std::sqrt(live_ss), 1e-9 * std::sqrt(live_ss));
  full.adamw_step(hp, 0.0f);
  hp.lr *= 0.5f;
  half.adamw_step(hp, 0.0f);
  for (size_t i = 0; i < m.params().size(); ++i) {
    const auto& p = m.params()[i];
    for (size_t part = 0; part < 4; ++part) {
      const size_t off = part * n + p.offset;
      const float* want =
          scale[i] == 0 ? before.data() + off : (scale[i] == 1 ? full.param_data() + off : half.param_data() + off);
      for (size_t k = 0; k < p.numel; ++k)
        ASSERT_EQ(m.param_data()[off + k], want[k]) << p.name << " part " << part << " element " << k;
    }
  }
  EXPECT_THROW(m.adamw_step_scaled(hp, 0.0f, std::vector<float>(scale.size() - 1, 1.0f)), std::invalid_argument);
}

// The device arena (engine/model/vit_cuda.cu) keeps [params | grads | m | v] device_segment_stride(n)
// floats apart. Every weight matrix's gradient is the output D of a cuBLASLt GEMM, and its
// algorithms want D 16-byte aligned: with the segments n apart, vit_b16's gradient segment
// started 8-byte aligned (n = 85,809,422 is 2 mod 4). Checks the arithmetic for every preset,
// and that each matrix's gradient and bf16 shadow copy start 16-byte aligned inside it.
TEST(Model, DeviceArenaSegmentsKeepEveryMatrix16ByteAligned) {
  for (const char* name : {"vit_ti16", "vit_s16", "vit_b16"}) {
    const auto table = vit::param_table(vit::ViTConfig::preset(name));
    size_t n = 0;
    for (const auto& p : table) n += p.numel;
    const size_t stride = vit::device_segment_stride(n);
    EXPECT_GE(stride, n) << name;
    EXPECT_LT(stride - n, 64u) << name;
    EXPECT_EQ(stride * sizeof(float) % 256, 0u) << name << ": segments must start 256-byte aligned";
    for (const auto& p : table) {
      if (p.shape.size() < 2) continue;  // biases and LayerNorm vectors are not GEMM outputs
      EXPECT_EQ((stride + p.offset) * sizeof(float) % 16, 0u) << name << " gradient of " << p.name;
      EXPECT_EQ(p.offset * 2 % 16, 0u) << name << " bf16 shadow of " << p.name;
    }
  }
  // The old layout fails the first condition for vit_b16: the check can tell the two apart.
  EXPECT_NE(85809422u * sizeof(float) % 16, 0u);
}

// The offsets by role that both model paths bind (engine/model/params.h) name the tensors they
// say they do: checked against the table's own name lookup, for every block.
TEST(Model, ParamOffsetsMatchTheNamedTable) {
  vit::ViTConfig c = vit::ViTConfig::preset("vit_ti16");
  c.depth = 3;
  c.num_classes = 5;
  vit::ViT m(c);
  const vit::ParamOffsets o = vit::param_offsets(m.params(), c.depth);
  EXPECT_EQ(o.conv_w, m.param("conv_proj.weight").offset);
  EXPECT_EQ(o.cls, m.param("class_token").offset);
  EXPECT_EQ(o.pos, m.param("encoder.pos_embedding").offset);
  EXPECT_EQ(o.head_b, m.param("heads.head.bias").offset);
  ASSERT_EQ(o.blocks.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const std::string l = "encoder.layers.encoder_layer_" + std::to_string(i) + ".";
    EXPECT_EQ(vit::layer_prefix(i), l);
    EXPECT_EQ(o.blocks[i].ln1_w, m.param(l + "ln_1.weight").offset);
    EXPECT_EQ(o.blocks[i].qkv_b, m.param(l + "self_attention.in_proj_bias").offset);
    EXPECT_EQ(o.blocks[i].proj_w, m.param(l + "self_attention.out_proj.weight").offset);
    EXPECT_EQ(o.blocks[i].fc2_b, m.param(l + "mlp.3.bias").offset);
  }
  EXPECT_NE(vit::site_seed(7, 0), vit::site_seed(7, 1));
}
