// `vitengine serve` over real HTTP: a child process on a free loopback port with a
// tiny random model, real requests with good images and every kind of bad one. After
// each bad request the server must still answer /healthz.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <httplib.h>
#include <openssl/evp.h>

#include <cmath>
#include <future>
#include <nlohmann/json.hpp>

#include "engine/data/tiff.h"
#include "serve_test_util.h"

using nlohmann::json;

namespace {

class ServeHttp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = vt::temp_dir("serve");
    model_ = dir_ + "/tiny.vit";
    vt::write_tiny_model(model_);
    // Small limits so that the limit tests stay small: 1 MiB body, 512 px, 4 images.
    server_ = new vt::ServerProcess({"--model", model_, "--max-upload-mb", "1", "--max-dim", "512", "--max-images", "4",
                                     "--max-batch", "4", "--queue", "16"});
  }
  static void TearDownTestSuite() {
    if (server_) EXPECT_EQ(server_->stop(), 0) << "server did not exit cleanly on SIGTERM";
    delete server_;
    server_ = nullptr;
    std::filesystem::remove_all(dir_);
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(30, 0);
    return c;
  }
  // POST multipart; parts are (field, filename, bytes, content type).
  httplib::Result post(const std::string& path, const httplib::MultipartFormDataItems& items) {
    return client().Post(path.c_str(), items);
  }
  static httplib::MultipartFormData part(const std::string& bytes, const std::string& field = "image",
                                         const std::string& name = "cell.png") {
    return {field, bytes, name, "application/octet-stream"};
  }
  // A 4xx with a JSON error body naming `code`, and the server still up.
  void expect_error(const httplib::Result& r, int status, const std::string& code) {
    ASSERT_TRUE(r) << "no response (connection error " << int(r.error()) << ")";
    EXPECT_EQ(r->status, status) << r->body;
    json j = json::parse(r->body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "error body is not JSON: " << r->body.substr(0, 200);
    ASSERT_TRUE(j.contains("error")) << r->body;
    EXPECT_EQ(j["error"]["code"], code) << r->body;
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    auto h = client().Get("/healthz");
    ASSERT_TRUE(h) << "server stopped answering after a bad request";
    EXPECT_EQ(h->status, 200);
  }
  static json predict_one(httplib::Client& c, const std::string& bytes) {
    auto r = c.Post("/v1/predict", httplib::MultipartFormDataItems{part(bytes)});
    if (!r || r->status != 200) throw std::runtime_error("predict failed");
    return json::parse(r->body)["results"][0];
  }

  static std::string dir_, model_;
  static vt::ServerProcess* server_;
};
std::string ServeHttp::dir_, ServeHttp::model_;
vt::ServerProcess* ServeHttp::server_ = nullptr;

TEST_F(ServeHttp, BindsLoopbackByDefault) {
  EXPECT_NE(server_->first_line().find("http://127.0.0.1:"), std::string::npos) << server_->first_line();
}

TEST_F(ServeHttp, HealthClassesAndPage) {
  auto h = client().Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto c = client().Get("/v1/classes");
  ASSERT_TRUE(c);
  json cl = json::parse(c->body)["classes"];
  ASSERT_EQ(cl.size(), 14u);
  EXPECT_EQ(cl[0]["name"], vit::classes()[0].name);
  for (const auto& x : cl) EXPECT_FALSE(x["description"].get<std::string>().empty()) << x["name"];
  auto p = client().Get("/");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200);
  EXPECT_NE(p->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(p->body.find("id=\"file\""), std::string::npos);
  // No external resources: nothing loaded from another origin.
  EXPECT_EQ(p->body.find("src=\"http"), std::string::npos);
  EXPECT_EQ(p->body.find("href=\"http"), std::string::npos);
}

TEST_F(ServeHttp, PredictOneImage) {
  auto r = post("/v1/predict?top_k=5", {part(vt::png_bytes(60, 50, 1))});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["model"].get<std::string>().rfind("tiny_test-", 0), 0u) << j["model"];
  ASSERT_EQ(j["results"].size(), 1u);
  json res = j["results"][0];
  EXPECT_EQ(res["name"], "cell.png");
  ASSERT_EQ(res["top"].size(), 5u);
  ASSERT_EQ(res["probabilities"].size(), 14u);
  double sum = 0;
  for (auto& [k, v] : res["probabilities"].items()) {
    EXPECT_GE(v.get<double>(), 0.0);
    sum += v.get<double>();
  }
  EXPECT_NEAR(sum, 1.0, 1e-4);  // 14 float probabilities, each rounded to ~1e-7
  for (size_t i = 1; i < 5; ++i) EXPECT_GE(res["top"][i - 1]["prob"], res["top"][i]["prob"]);
  EXPECT_EQ(res["prediction"], res["top"][0]["class"]);
  EXPECT_FLOAT_EQ(res["confidence"].get<float>(), res["top"][0]["prob"].get<float>());
  EXPECT_EQ(res["review"].get<bool>(), res["confidence"].get<double>() < 0.5);
  EXPECT_FALSE(res["notes"]["description"].get<std::string>().empty());
  EXPECT_FALSE(res["notes"]["abnormal"].get<std::string>().empty());
  EXPECT_FALSE(res["notes"]["fact"].get<std::string>().empty());
  EXPECT_FALSE(j.contains("differential"));  // only for several images
}

TEST_F(ServeHttp, PredictSeveralImagesGivesDifferential) {
  auto r = post("/v1/predict",
                {part(vt::png_bytes(40, 40, 1), "image", "a.png"), part(vt::jpeg_bytes(64, 48, 2), "image", "b.jpg"),
                 part(vt::png_bytes(33, 70, 3), "image", "../../etc/passwd")});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["results"].size(), 3u);
  EXPECT_EQ(j["results"][0]["name"], "a.png");
  EXPECT_EQ(j["results"][2]["name"], "passwd");  // a client path is only a label, reduced to its last part
  EXPECT_EQ(j["differential"]["cells_total"], 3);
  EXPECT_EQ(j["differential"]["flags"].size(), 6u);
}

TEST_F(ServeHttp, ConcurrentRequestsAreBatchedWithoutMixingImages) {
  // Each image alone first, then all at once from separate threads: every answer must
  // match its image's solo answer (batching must not mix rows), within float noise.
  httplib::Client c = client();
  std::vector<std::string> imgs;
  std::vector<json> solo;
  for (int i = 0; i < 6; ++i) {
    imgs.push_back(vt::png_bytes(48, 48, 100 + i));
    solo.push_back(predict_one(c, imgs.back()));
  }
  std::vector<std::future<json>> futs;
  for (int i = 0; i < 6; ++i)
    futs.push_back(std::async(std::launch::async, [&, i] {
      httplib::Client ci("127.0.0.1", server_->port());
      ci.set_read_timeout(30, 0);
      return predict_one(ci, imgs[i]);
    }));
  bool differ = false;
  for (int i = 0; i < 6; ++i) {
    json got = futs[i].get();
    EXPECT_EQ(got["prediction"], solo[i]["prediction"]) << "image " << i;
    for (auto& [k, v] : solo[i]["probabilities"].items())
      EXPECT_NEAR(got["probabilities"][k].get<double>(), v.get<double>(), 1e-5) << "image " << i << " " << k;
    if (i && std::abs(solo[i]["confidence"].get<double>() - solo[0]["confidence"].get<double>()) > 1e-6) differ = true;
  }
  EXPECT_TRUE(differ) << "all images gave the same answer: the check above would prove nothing";
}

TEST_F(ServeHttp, ExplainReturnsOverlay) {
  auto r = post("/v1/explain", {part(vt::png_bytes(50, 50, 5))});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["grid"], 4);              // 32 / 8
  ASSERT_EQ(j["rollout"].size(), 16u);  // one value per patch
  std::string b64 = j["overlay_png_base64"];
  std::string png(b64.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(png.data()),
                          reinterpret_cast<const unsigned char*>(b64.data()), int(b64.size()));
  ASSERT_GT(n, 8);
  vit::Image im = vit::decode_image(reinterpret_cast<const uint8_t*>(png.data()), size_t(n), "overlay");
  EXPECT_EQ(im.width, 32);
  EXPECT_EQ(im.height, 32);
  // the out-of-distribution score of /v1/predict for the same image (null flag: no threshold stored)
  auto pr = post("/v1/predict", {part(vt::png_bytes(50, 50, 5))});
  ASSERT_TRUE(pr);
  ASSERT_EQ(pr->status, 200) << pr->body;
  const json want = json::parse(pr->body)["results"][0];
  EXPECT_NEAR(j["ood_score"].get<double>(), want["ood_score"].get<double>(),
              1e-5 * std::fabs(want["ood_score"].get<double>()));
  EXPECT_TRUE(j["unlike_training_data"].is_null());
  EXPECT_TRUE(want["unlike_training_data"].is_null());
  auto p = post("/v1/explain?format=png", {part(vt::png_bytes(50, 50, 5))});
  ASSERT_TRUE(p);
  ASSERT_EQ(p->status, 200);
  EXPECT_EQ(p->get_header_value("Content-Type"), "image/png");
  EXPECT_EQ(p->body.substr(1, 3), "PNG");
}

TEST_F(ServeHttp, BadUploads) {
  expect_error(post("/v1/predict", {part("this is plain text, not an image", "image", "notes.txt")}), 415,
               "not_an_image");
  expect_error(post("/v1/predict", {part("")}), 400, "empty_file");
  std::string png = vt::png_bytes(64, 64, 9);
  expect_error(post("/v1/predict", {part(png.substr(0, png.size() / 2))}), 400, "bad_image");
  std::string jpg = vt::jpeg_bytes(64, 64, 9);
  expect_error(post("/v1/predict", {part(jpg.substr(0, jpg.size() / 2), "image", "cut.jpg")}), 400, "truncated_image");
  expect_error(post("/v1/predict", {part(png, "file")}), 400, "missing_field");
  expect_error(post("/v1/predict", {part(vt::png_bytes(600, 20, 1))}), 413, "image_too_large");
  httplib::MultipartFormDataItems five;
  for (int i = 0; i < 5; ++i) five.push_back(part(png));
  expect_error(post("/v1/predict", five), 413, "too_many_images");
  // One good image and one bad: the whole request fails, naming the bad one.
  auto mixed = post("/v1/predict", {part(png, "image", "good.png"), part("garbage", "image", "bad.png")});
  expect_error(mixed, 415, "not_an_image");
  EXPECT_NE(mixed->body.find("bad.png"), std::string::npos);
}

// The ways clients send images besides multipart: a raw image/* body and JSON with base64, each
// giving the same answer as the multipart upload of the same bytes.
TEST_F(ServeHttp, RawAndBase64UploadsGiveTheMultipartAnswer) {
  const std::string png = vt::png_bytes(40, 40, 7);
  auto m = post("/v1/predict", {part(png, "image", "a.png")});
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200) << m->body;
  const json want = json::parse(m->body)["results"][0];
  auto raw = client().Post("/v1/predict?name=a.png", png, "image/png");
  ASSERT_TRUE(raw);
  ASSERT_EQ(raw->status, 200) << raw->body;
  // Same image, same probabilities up to the batch the forward pass ran in (summation order).
  auto same = [&](const json& got) {
    for (auto& [k, v] : want["probabilities"].items())
      EXPECT_NEAR(got["probabilities"][k].get<double>(), v.get<double>(), 1e-5) << k;
  };
  json got = json::parse(raw->body)["results"][0];
  EXPECT_EQ(got["name"], "a.png");
  same(got);
  std::vector<unsigned char> b64(4 * ((png.size() + 2) / 3) + 1);  // OpenSSL's encoder as the independent one
  const int n = EVP_EncodeBlock(b64.data(), reinterpret_cast<const unsigned char*>(png.data()), int(png.size()));
  const std::string data(reinterpret_cast<char*>(b64.data()), size_t(n));
  json body = {{"images", {{{"name", "a.png"}, {"data", data}}, {{"name", "b.png"}, {"data", data}}}}};
  auto js = client().Post("/v1/predict", body.dump(), "application/json");
  ASSERT_TRUE(js);
  ASSERT_EQ(js->status, 200) << js->body;
  json two = json::parse(js->body)["results"];
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1]["name"], "b.png");
  same(two[0]);
  same(two[1]);
  // Their faults, each a 4xx naming what is wrong.
  expect_error(client().Post("/v1/predict", "", "application/json"), 400, "bad_json");
  expect_error(client().Post("/v1/predict", "{\"images\": [{\"data\": \"@@@\"}]}", "application/json"), 400,
               "bad_base64");
  expect_error(client().Post("/v1/predict", "{\"images\": 3}", "application/json"), 400, "bad_json");
  expect_error(client().Post("/v1/predict", "", "image/png"), 400, "missing_field");
  expect_error(client().Post("/v1/predict", "plain words", "text/plain"), 415, "unsupported_media_type");
  expect_error(client().Post("/v1/predict", "plain words", "image/jpeg"), 415, "not_an_image");
}

// A microscope's TIFF, raw (image/tiff) or in a form, gets the answer its pixels as PNG get (the same
// pixels, written by Pillow: tests/data/tiff/README.md).
TEST_F(ServeHttp, ATiffGetsTheAnswerOfTheSamePixelsAsPng) {
  if (!vit::tiff::supported()) GTEST_SKIP() << "built without libtiff";
  const std::string dir = std::string(VITENGINE_TEST_DATA) + "/tiff/";
  const std::string tif = vt::read_file(dir + "rgb_lzw.tif"), png = vt::read_file(dir + "rgb.png");
  auto want = post("/v1/predict", {part(png, "image", "a.png")});
  ASSERT_TRUE(want);
  ASSERT_EQ(want->status, 200) << want->body;
  const json w = json::parse(want->body)["results"][0];
  auto raw = client().Post("/v1/predict?name=a.tif", tif, "image/tiff");
  auto form = post("/v1/predict", {part(tif, "image", "a.tif")});
  for (auto* r : {&raw, &form}) {
    ASSERT_TRUE(*r);
    ASSERT_EQ((*r)->status, 200) << (*r)->body;
    const json got = json::parse((*r)->body)["results"][0];
    for (auto& [k, v] : w["probabilities"].items())
      EXPECT_NEAR(got["probabilities"][k].get<double>(), v.get<double>(), 1e-5) << k;
  }
}

// A PNG whose header claims 40,000 x 40,000 pixels is a PNG, too large: the answer names the limit.
TEST_F(ServeHttp, HugePngHeaderIsTooLargeNotNotAnImage) {
  std::string png = vt::png_bytes(32, 32, 1);
  for (size_t at : {16u, 20u}) {  // IHDR width, height (big-endian); the CRC is not checked before the size
    const uint32_t v = 40000;
    png[at] = char(v >> 24), png[at + 1] = char(v >> 16), png[at + 2] = char(v >> 8), png[at + 3] = char(v);
  }
  auto r = post("/v1/predict", {part(png)});
  expect_error(r, 413, "image_too_large");
  EXPECT_NE(r->body.find("40000x40000"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("limit"), std::string::npos) << r->body;
}

TEST_F(ServeHttp, BadRequests) {
  expect_error(post("/v1/predict?top_k=abc", {part(vt::png_bytes(32, 32, 1))}), 400, "bad_parameter");
  expect_error(post("/v1/predict?top_k=15", {part(vt::png_bytes(32, 32, 1))}), 400, "bad_parameter");
  expect_error(post("/v1/explain?format=gif", {part(vt::png_bytes(32, 32, 1))}), 400, "bad_parameter");
  expect_error(post("/v1/explain", {part(vt::png_bytes(32, 32, 1)), part(vt::png_bytes(32, 32, 2))}), 413,
               "too_many_images");
  expect_error(client().Get("/v1/predict"), 405, "method_not_allowed");
  expect_error(client().Get("/etc/passwd"), 404, "not_found");
  expect_error(client().Get("/../../etc/passwd"), 404, "not_found");
  // Over the 1 MiB body limit: rejected before the body is read.
  std::string big(1200 * 1024, 'x');
  expect_error(post("/v1/predict", {part(big)}), 413, "payload_too_large");
}

TEST_F(ServeHttp, MetricsCountRequestsAndErrors) {
  post("/v1/predict", {part("not an image")});
  post("/v1/predict", {part(vt::png_bytes(32, 32, 3))});
  // httplib's logger (where the server records a request) runs after the response has
  // been written, so the client can ask /metrics before the second POST is counted:
  // poll for up to 2 s instead of racing the server thread.
  json j;
  for (int i = 0; i < 200; i++) {
    auto m = client().Get("/v1/stats");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->status, 200);
    j = json::parse(m->body);
    if (j["requests_by_route"]["POST /v1/predict"].get<int>() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(j["requests_total"].get<int>(), 2);
  EXPECT_GE(j["errors_4xx"].get<int>(), 1);
  EXPECT_GE(j["requests_by_route"]["POST /v1/predict"].get<int>(), 2);
  EXPECT_GE(j["images"].get<int>(), 1);
  // Percentiles per route: health probes do not pool with predictions.
  const json& lat = j["latency_ms_by_route"]["POST /v1/predict"];
  EXPECT_TRUE(lat["p50"].is_number());
  EXPECT_LE(lat["p50"].get<double>(), lat["p99"].get<double>());
  EXPECT_EQ(j["queue_capacity"], 16);
}

TEST(ServeHttpOtherModel, ClassesOutsideTheTaxonomyStillPredict) {
  // A model whose classes are class_0..class_13: predictions work, notes are empty and
  // the differential is left out with a reason (it was a 500 before).
  std::string dir = vt::temp_dir("serve_other");
  vt::write_tiny_model(dir + "/plain.vit", 3, /*taxonomy_names=*/false);
  vt::ServerProcess server({"--model", dir + "/plain.vit"});
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(30, 0);
  auto r = c.Post("/v1/predict", httplib::MultipartFormDataItems{{"image", vt::png_bytes(40, 40, 1), "a.png", ""},
                                                                 {"image", vt::png_bytes(40, 40, 2), "b.png", ""}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["results"][0]["prediction"].get<std::string>().rfind("class_", 0), 0u);
  EXPECT_FALSE(j.contains("differential"));
  EXPECT_TRUE(j.contains("differential_unavailable"));
  EXPECT_EQ(server.stop(), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
