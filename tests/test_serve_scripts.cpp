// Script-driven checks of `vitengine serve`, run from the one test binary so that they
// can make their own tiny model: the headless-Chromium page test
// (tests/serve_browser.py) and a small bounded load test (tools/loadtest.py). Both
// skip (GTEST_SKIP) when python3 or Chromium is missing.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve_test_util.h"

namespace {

std::string source_dir() { return VITENGINE_SOURCE_DIR; }

std::string python() {
  for (const char* p : {"/usr/bin/python3", "/usr/local/bin/python3"})
    if (access(p, X_OK) == 0) return p;
  return "";
}

TEST(ServeBrowser, UploadShowsPredictionChartOverlayAndDifferential) {
  if (python().empty()) GTEST_SKIP() << "no python3";
  std::string dir = vt::temp_dir("browser");
  vt::write_tiny_model(dir + "/tiny.vit");
  vt::write_file(dir + "/a.png", vt::png_bytes(64, 64, 1));
  vt::write_file(dir + "/b.jpg", vt::jpeg_bytes(80, 60, 2));
  std::string out, err;
  int rc = vt::run(python() + " " + source_dir() + "/tests/serve_browser.py --binary " + VITENGINE_BINARY +
                       " --model " + dir + "/tiny.vit --image " + dir + "/a.png --image " + dir + "/b.jpg" +
                       " --screenshot " + dir + "/shot.png --timeout 90",
                   &out, &err);
  std::filesystem::remove_all(dir);
  if (rc == 77) GTEST_SKIP() << out;
  EXPECT_EQ(rc, 0) << out << err;
  EXPECT_NE(out.find("PASS"), std::string::npos) << out;
}

TEST(ServeBrowser, TheSamePageOverHttps) {
  if (python().empty()) GTEST_SKIP() << "no python3";
  std::string dir = vt::temp_dir("browser_tls");
  std::string out, err;
  if (vt::run("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout " + dir +
                  "/key.pem -out " + dir + "/cert.pem",
              &out, &err) != 0)
    GTEST_SKIP() << "no openssl command to make a certificate";
  vt::write_tiny_model(dir + "/tiny.vit");
  vt::write_file(dir + "/a.png", vt::png_bytes(64, 64, 1));
  int rc = vt::run(python() + " " + source_dir() + "/tests/serve_browser.py --binary " + VITENGINE_BINARY +
                       " --model " + dir + "/tiny.vit --image " + dir + "/a.png --tls-cert " + dir +
                       "/cert.pem --tls-key " + dir + "/key.pem --timeout 90",
                   &out, &err);
  std::filesystem::remove_all(dir);
  if (rc == 77) GTEST_SKIP() << out;
  EXPECT_EQ(rc, 0) << out << err;
  EXPECT_NE(out.find("PASS"), std::string::npos) << out;
}

TEST(ServeLoad, EightAndThirtyTwoClientsBoundedNoErrors) {
  if (python().empty()) GTEST_SKIP() << "no python3";
  std::string dir = vt::temp_dir("load");
  vt::write_tiny_model(dir + "/tiny.vit");
  vt::write_file(dir + "/a.png", vt::png_bytes(64, 64, 1));
  vt::ServerProcess server({"--model", dir + "/tiny.vit", "--max-batch", "8"});
  std::string url = "http://127.0.0.1:" + std::to_string(server.port());
  std::string out, err;
  // 8 then 32 clients x at most 5 requests, at most 30 s each. 32 new connections at
  // once overflowed httplib's default listen backlog of 5 (resets) before the fix.
  int rc = vt::run(python() + " " + source_dir() + "/tools/loadtest.py --url " + url + " --image " + dir +
                       "/a.png --clients 8 32 --requests 5 --duration 30",
                   &out, &err);
  ASSERT_EQ(rc, 0) << out << err;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j[0]["errors"], 0) << out;
  EXPECT_EQ(j[0]["ok"], 40) << out;
  EXPECT_EQ(j[1]["errors"], 0) << out;
  EXPECT_EQ(j[1]["ok"], 160) << out;
  EXPECT_TRUE(server.alive());
  httplib::Client c("127.0.0.1", server.port());
  auto m = c.Get("/v1/stats");
  ASSERT_TRUE(m);
  auto mj = nlohmann::json::parse(m->body);
  EXPECT_GE(mj["requests_by_route"]["POST /v1/predict"].get<int>(), 200);
  EXPECT_EQ(mj["errors_5xx"], 0);
  EXPECT_EQ(server.stop(), 0);
  std::filesystem::remove_all(dir);
}

// /metrics through Prometheus' own parser (tests/serve_prometheus.py): types, labels, cumulative
// buckets, counts that match the requests made.
TEST(ServePrometheus, MetricsParseWithPrometheusClient) {
  if (python().empty()) GTEST_SKIP() << "no python3";
  std::string dir = vt::temp_dir("prom");
  vt::write_tiny_model(dir + "/tiny.vit");
  vt::ServerProcess server({"--model", dir + "/tiny.vit"});
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(30, 0);
  for (int i = 0; i < 3; ++i) {
    auto r = c.Post("/v1/predict", vt::png_bytes(40, 40, uint32_t(i + 1)), "image/png");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  ASSERT_TRUE(c.Get("/healthz"));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the logger records after answering
  std::string out, err;
  int rc = vt::run(python() + " " + source_dir() + "/tests/serve_prometheus.py --url http://127.0.0.1:" +
                       std::to_string(server.port()) + " --predicts 3",
                   &out, &err);
  EXPECT_EQ(server.stop(), 0);
  std::filesystem::remove_all(dir);
  if (rc == 77) GTEST_SKIP() << out;
  EXPECT_EQ(rc, 0) << out << err;
}

// schemathesis (PyPI) generates requests from /openapi.json against the live server: every answer
// must be documented (status, content type, schema, headers), never a 5xx, a crash or a hang, and
// a request that breaks the schema must be refused. Two checks are left out, with reasons:
// positive_data_acceptance (schema-valid bytes are still not a decodable image, and the service
// must refuse them), unsupported_method (httplib answers methods it does not know, such as QUERY,
// with 400 before any handler runs; every method it knows gets 405 with Allow).
TEST(ServeSchemathesis, EveryGeneratedRequestGetsADocumentedAnswer) {
  if (python().empty()) GTEST_SKIP() << "no python3";
  const std::string venv =
      std::string(VITENGINE_BINARY).substr(0, std::string(VITENGINE_BINARY).rfind('/')) + "/test-venv-schemathesis";
  std::string out, err;
  if (access((venv + "/bin/st").c_str(), X_OK) != 0 &&
      vt::run(python() + " -m venv " + venv + " && " + venv + "/bin/pip install -q 'schemathesis>=4,<5'", &out, &err) !=
          0)
    GTEST_SKIP() << "cannot install schemathesis from PyPI: " << err.substr(0, 300);
  std::string dir = vt::temp_dir("schemathesis");
  vt::write_tiny_model(dir + "/tiny.vit");
  vt::ServerProcess server({"--model", dir + "/tiny.vit", "--access-log", dir + "/access.log"});
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port());
  const std::string st = "timeout 240 " + venv + "/bin/st run " + url +
                         "/openapi.json --checks all --exclude-checks positive_data_acceptance,unsupported_method "
                         "--max-examples 25 --seed 1 --request-timeout 20 --max-failures 20 --no-color";
  int rc = vt::run(st, &out, &err);
  // A failed run is printed and repeated once; the test fails when the repeat fails too, so a
  // reproducible fault still fails it. (The "connection aborted" runs seen on loaded machines were
  // server faults: bodies of TRACE, GET and QUERY requests left in the socket and parsed as the
  // next request; see ServeOps.BodiesTheServerDoesNotReadCloseTheConnection.)
  if (rc != 0) {
    std::printf("schemathesis, first run failed; its summary:\n%s\nrunning once more\n",
                out.substr(out.size() > 3000 ? out.size() - 3000 : 0).c_str());
    rc = vt::run(st, &out, &err);
  }
  EXPECT_EQ(rc, 0) << out.substr(out.size() > 6000 ? out.size() - 6000 : 0) << err;
  if (rc != 0) {  // the server's side of the story: which requests came before the failing one
    std::ifstream log(dir + "/access.log");
    std::vector<std::string> lines;
    for (std::string l; std::getline(log, l);) lines.push_back(l);
    std::printf("the server's access log, last 40 lines:\n");
    for (size_t i = lines.size() > 40 ? lines.size() - 40 : 0; i < lines.size(); ++i) std::printf("%s\n", lines[i].c_str());
  }
  EXPECT_TRUE(server.alive()) << "the server died under schemathesis";
  EXPECT_EQ(server.stop(), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
