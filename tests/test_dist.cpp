// Data-parallel training and evaluation on the CPU (docs/distributed.md), through the CLI under
// `mpirun -np 2`: the ranks must follow one process at the same global batch step for step,
// resume across rank counts, end cleanly when a rank is killed, refuse ranks that disagree, and
// shard evaluation without changing one number of metrics.json. The reference is always a plain
// one-process run of the same binary, whose code path has no collective in it.
// Skipped when vitengine was built without MPI or mpirun is missing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "weights/checkpoint.h"

namespace fs = std::filesystem;

namespace {

const std::string kSrc = VITENGINE_SOURCE_DIR;
const std::string kBin = VITENGINE_BINARY;
const std::string kMpirun = VITENGINE_MPIEXEC;
// The quick start's model and data; small enough that ten steps take well under a second.
const std::string kTrain = kBin + " train --config " + kSrc + "/configs/quickstart.json --data " + kSrc +
                           "/tests/fixtures/quickstart --set threads=1 ";

fs::path tmpdir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("vit_dist_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// mpirun with its options: --oversubscribe: CI has 2 cores; --allow-run-as-root: CI's container runs as
// root; orte_tmpdir_base: a session folder of this test process's own, because two mpiruns started at
// the same moment (ctest -j2) race to create the shared /tmp/ompi.<host>.<uid> and one of them fails
// ("A call to mkdir was unable to create the desired directory ... File exists").
std::string mpirun_base() {
  static const struct Dir {
    fs::path p = fs::temp_directory_path() / ("vit_ompi_" + std::to_string(::getpid()));
    Dir() { fs::create_directories(p); }
    ~Dir() { fs::remove_all(p); }
  } dir;
  return kMpirun + " --oversubscribe --allow-run-as-root --mca orte_tmpdir_base " + dir.p.string() + " ";
}
std::string mpirun(int np) { return mpirun_base() + "-np " + std::to_string(np) + " "; }

// Runs a shell command, its output into `log`; returns the exit status.
int sh(const std::string& cmd, const fs::path& log) {
  const int rc = std::system((cmd + " > " + log.string() + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// steps.csv's losses, in step order.
std::vector<double> losses(const fs::path& run) {
  std::ifstream f(run / "steps.csv");
  std::string line;
  std::getline(f, line);
  std::vector<double> out;
  while (std::getline(f, line)) {
    std::stringstream ss(line);
    std::string step, epoch, loss;
    std::getline(ss, step, ',');
    std::getline(ss, epoch, ',');
    std::getline(ss, loss, ',');
    out.push_back(std::stod(loss));
  }
  return out;
}

// Summation order is all that differs between the ranks' reduction and one process's batch
// mean, so float32 rounding, a few ulps per step, is the only expected difference: 1e-5 leaves
// room for ten steps of it and is still a thousand times below the change one image makes.
constexpr double kRel = 1e-5;

void expect_same_losses(const fs::path& ref, const fs::path& run, size_t steps) {
  const auto a = losses(ref), b = losses(run);
  ASSERT_EQ(a.size(), steps) << ref;
  ASSERT_EQ(b.size(), steps) << run;
  for (size_t i = 0; i < steps; ++i)
    EXPECT_LE(std::abs(a[i] - b[i]), kRel * std::abs(a[i])) << "step " << i + 1 << ": " << a[i] << " vs " << b[i];
}

// Every parameter of the two last.vit files, tensor by tensor: the relative L2 distance.
void expect_same_params(const fs::path& ref, const fs::path& run) {
  vit::LoadedModel a = vit::load_model((ref / "last.vit").string());
  vit::LoadedModel b = vit::load_model((run / "last.vit").string());
  ASSERT_EQ(a.model->num_params(), b.model->num_params());
  EXPECT_EQ(a.train_state.at("step"), b.train_state.at("step"));
  double moved = 0;  // the parameters must have trained, or equal files would prove nothing
  vit::ViT fresh(a.model->config());
  fresh.init(0);
  for (const auto& p : a.model->params()) {
    const float* x = a.model->param_data() + p.offset;
    const float* y = b.model->param_data() + p.offset;
    const float* z = fresh.param_data() + p.offset;
    // The key bias gets a gradient that is zero in exact arithmetic (softmax ignores a shift
    // shared by every key), so what it holds is rounding noise, which AdamW divides by its own
    // size into lr-sized steps of random sign: any change of summation order moves it by about
    // lr. It is left out; its third of in_proj_bias is [dim, 2 dim).
    const bool in_proj_bias = p.name.find("in_proj_bias") != std::string::npos;
    const size_t dim = size_t(a.model->config().dim);
    double d = 0, n = 0;
    for (size_t i = 0; i < p.numel; ++i) {
      if (in_proj_bias && i >= dim && i < 2 * dim) continue;
      d += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
      n += double(x[i]) * x[i];
      moved = std::max(moved, std::abs(double(x[i]) - z[i]));
    }
    EXPECT_LE(std::sqrt(d), kRel * std::sqrt(n) + 1e-12) << p.name;
  }
  EXPECT_GT(moved, 1e-4) << "training moved no parameter";
}

class Dist : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef VITENGINE_TEST_MPI
    GTEST_SKIP() << "vitengine was built without MPI (VITENGINE_MPI=OFF)";
#endif
    if (kMpirun.empty() || !fs::exists(kMpirun)) GTEST_SKIP() << "no mpirun";
    // mpirun binds each rank to one core, so its OpenMP runs one thread; the one-process
    // reference must too, because the CPU ops' results depend on the thread count (their
    // parallel reductions split the work by thread).
    setenv("OMP_NUM_THREADS", "1", 1);
  }
};

TEST_F(Dist, TwoRanksFollowOneProcess) {
  const fs::path d = tmpdir("match");
  ASSERT_EQ(sh(kTrain + "--out " + (d / "one").string() + " --set max_steps=10", d / "one.log"), 0)
      << slurp(d / "one.log");
  ASSERT_EQ(sh(mpirun(2) + kTrain + "--out " + (d / "two").string() + " --set max_steps=10", d / "two.log"), 0)
      << slurp(d / "two.log");
  expect_same_losses(d / "one", d / "two", 10);
  expect_same_params(d / "one", d / "two");
  // one rank under mpirun takes the collective path (scale 1, a sum over one rank): bit for bit
  ASSERT_EQ(sh(mpirun(1) + kTrain + "--out " + (d / "mpi1").string() + " --set max_steps=10", d / "mpi1.log"), 0)
      << slurp(d / "mpi1.log");
  EXPECT_EQ(slurp(d / "one" / "steps.csv"), slurp(d / "mpi1" / "steps.csv"));
  // rank 0 alone logs: one line per logged step, not two
  const std::string log = slurp(d / "two.log");
  EXPECT_EQ(log.find("step 5/10"), log.rfind("step 5/10")) << log;
}

// A whole epoch with its short last batch (168 train images at 16: ten batches and one of 8,
// 4 per rank), then validation and the end-of-run report, both sharded over the ranks.
TEST_F(Dist, WholeEpochWithValidationAndReport) {
  const fs::path d = tmpdir("epoch");
  const std::string args = " --set epochs=1 drop_last=false";
  ASSERT_EQ(sh(kTrain + "--out " + (d / "one").string() + args, d / "one.log"), 0) << slurp(d / "one.log");
  ASSERT_EQ(sh(mpirun(2) + kTrain + "--out " + (d / "two").string() + args, d / "two.log"), 0) << slurp(d / "two.log");
  expect_same_losses(d / "one", d / "two", 11);
  expect_same_params(d / "one", d / "two");
  auto one = nlohmann::json::parse(slurp(d / "one" / "report" / "val_metrics.json"));
  auto two = nlohmann::json::parse(slurp(d / "two" / "report" / "val_metrics.json"));
  EXPECT_EQ(one.at("accuracy"), two.at("accuracy"));
  EXPECT_EQ(one.at("macro_f1"), two.at("macro_f1"));
  EXPECT_EQ(one.at("confusion"), two.at("confusion"));
  EXPECT_NEAR(one.at("temperature").get<double>(), two.at("temperature").get<double>(),
              kRel * one.at("temperature").get<double>());
  for (const char* f : {"best.vit", "metrics.csv", "summary.md", "loss.svg", "report/confusion_counts.svg"})
    EXPECT_TRUE(fs::exists(d / "two" / f)) << f;
}

TEST_F(Dist, ResumesAcrossRankCounts) {
  const fs::path d = tmpdir("resume");
  ASSERT_EQ(sh(kTrain + "--out " + (d / "ref").string() + " --set max_steps=10", d / "ref.log"), 0);
  // 2 ranks for 5 steps, then 1 process to 10; and 1 process for 5, then 2 ranks to 10
  ASSERT_EQ(sh(mpirun(2) + kTrain + "--out " + (d / "a").string() + " --set max_steps=5", d / "a1.log"), 0)
      << slurp(d / "a1.log");
  ASSERT_EQ(sh(kTrain + "--out " + (d / "a").string() + " --resume --set max_steps=10", d / "a2.log"), 0)
      << slurp(d / "a2.log");
  ASSERT_EQ(sh(kTrain + "--out " + (d / "b").string() + " --set max_steps=5", d / "b1.log"), 0);
  ASSERT_EQ(sh(mpirun(2) + kTrain + "--out " + (d / "b").string() + " --resume --set max_steps=10", d / "b2.log"), 0)
      << slurp(d / "b2.log");
  for (const char* run : {"a", "b"}) {
    SCOPED_TRACE(run);
    expect_same_losses(d / "ref", d / run, 10);
    expect_same_params(d / "ref", d / run);
  }
}

TEST_F(Dist, KilledRankEndsTheJobAndTheCheckpointResumes) {
  const fs::path d = tmpdir("kill"), run = d / "run";
  ASSERT_EQ(sh(kTrain + "--out " + (d / "ref").string() + " --set max_steps=12", d / "ref.log"), 0);
  // Rank 0, the one that writes, is killed once a checkpoint is on disk; steps are slowed down
  // (test hook; 300 ms: at 150 a loaded CI machine once let the job end first) so that the kill
  // lands mid-run. The script prints mpirun's status and the milliseconds it took to end.
  const std::string script = "VITENGINE_TEST_SLEEP_MS=300 " + mpirun(2) + kTrain + "--out " + run.string() +
                             " --set max_steps=12 checkpoint_every=2 > " + (d / "job.log").string() +
                             " 2>&1 & M=$!\n"
                             "for i in $(seq 600); do grep -q 'checkpoint .* at step 4' " +
                             (d / "job.log").string() +
                             " && break; sleep 0.1; done\n"
                             // mpirun's children are the ranks; /proc alone finds them (no procps needed)
                             "for s in /proc/[0-9]*/stat; do\n"
                             "  read -r p c st pp rest < $s 2>/dev/null || continue\n"
                             "  [ \"$pp\" = \"$M\" ] || continue\n"
                             "  tr '\\0' '\\n' < /proc/$p/environ | grep -qx OMPI_COMM_WORLD_RANK=0 && kill -9 $p\n"
                             "done\n"
                             "t0=$(date +%s%N); wait $M; rc=$?; t1=$(date +%s%N)\n"
                             "echo \"$rc $(( (t1 - t0) / 1000000 ))\"\n";
  std::ofstream(d / "kill.sh") << script;
  ASSERT_EQ(sh("bash " + (d / "kill.sh").string(), d / "kill.out"), 0);
  std::stringstream out(slurp(d / "kill.out"));
  int rc = 0;
  long ms = 0;
  out >> rc >> ms;
  EXPECT_NE(rc, 0) << slurp(d / "job.log");
  EXPECT_LT(ms, 60000) << "the job took " << ms << " ms to end after the kill";
  // the checkpoint is whole and the run continues from it on the curve of the uninterrupted run
  vit::LoadedModel lm = vit::load_model((run / "last.vit").string());
  const int64_t at = lm.train_state.at("step").get<int64_t>();
  EXPECT_GE(at, 4);
  EXPECT_LT(at, 12) << "the kill came after the end";
  ASSERT_EQ(sh(mpirun(2) + kTrain + "--out " + run.string() + " --resume --set max_steps=12", d / "resume.log"), 0)
      << slurp(d / "resume.log");
  expect_same_losses(d / "ref", run, 12);
  expect_same_params(d / "ref", run);
}

TEST_F(Dist, RanksThatDisagreeAreRefused) {
  const fs::path d = tmpdir("refuse");
  // MPMD launch: rank 0 and rank 1 get different learning rates
  const std::string a = kTrain + "--out " + (d / "run").string() + " --set max_steps=2 lr=0.001";
  const std::string b = kTrain + "--out " + (d / "run").string() + " --set max_steps=2 lr=0.002";
  EXPECT_EQ(sh(mpirun_base() + "-np 1 " + a + " : -np 1 " + b, d / "lr.log"), 1)
      << slurp(d / "lr.log");
  EXPECT_NE(slurp(d / "lr.log").find("the training config differs between ranks: lr (rank 0 0.001"), std::string::npos)
      << slurp(d / "lr.log");
  EXPECT_FALSE(fs::exists(d / "run" / "last.vit"));
  // a global batch the ranks cannot share
  EXPECT_NE(
      sh(mpirun(2) + kTrain + "--out " + (d / "odd").string() + " --set max_steps=2 batch_size=15", d / "odd.log"), 0);
  EXPECT_NE(slurp(d / "odd.log").find("choose a multiple of 2"), std::string::npos) << slurp(d / "odd.log");
}

TEST_F(Dist, ShardedEvalWritesTheSameMetrics) {
  const fs::path d = tmpdir("eval");
  ASSERT_EQ(sh(kTrain + "--out " + (d / "run").string() + " --set max_steps=10", d / "train.log"), 0);
  // 70 test images in batches of 16: 5 batches, 3 on rank 0 and 2 on rank 1
  const std::string ev = kBin + " eval --model " + (d / "run" / "last.vit").string() + " --data " + kSrc +
                         "/tests/fixtures/quickstart --split test --batch-size 16 --threads 1 --out ";
  ASSERT_EQ(sh(ev + (d / "one").string(), d / "one.log"), 0) << slurp(d / "one.log");
  ASSERT_EQ(sh(mpirun(2) + ev + (d / "two").string(), d / "two.log"), 0) << slurp(d / "two.log");
  auto one = nlohmann::json::parse(slurp(d / "one" / "metrics.json"));
  auto two = nlohmann::json::parse(slurp(d / "two" / "metrics.json"));
  one.erase("seconds");  // wall time, the one field that may differ
  two.erase("seconds");
  EXPECT_EQ(one.dump(), two.dump());
  EXPECT_EQ(one.at("n"), 70);
}

}  // namespace
