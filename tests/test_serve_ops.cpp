// `vitengine serve` as an operator runs it: request ids, the JSON-lines access log, CORS, API keys,
// TLS, the refusal to listen beyond loopback without a key, and slow clients that must not starve
// health checks. Each through the real binary (tests/serve_test_util.h).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "serve_test_util.h"

using nlohmann::json;

namespace {

struct TinyModel {
  std::string dir = vt::temp_dir("ops");
  std::string model = dir + "/tiny.vit";
  TinyModel() { vt::write_tiny_model(model); }
  ~TinyModel() { std::filesystem::remove_all(dir); }
};

TEST(ServeOps, RequestIdIsEchoedOrMadeUp) {
  TinyModel m;
  vt::ServerProcess server({"--model", m.model});
  httplib::Client c("127.0.0.1", server.port());
  auto r = c.Get("/healthz", {{"X-Request-Id", "lab-7.run_42"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("X-Request-Id"), "lab-7.run_42");
  auto a = c.Get("/healthz"), b = c.Get("/healthz"), bad = c.Get("/healthz", {{"X-Request-Id", "<script>x</script>"}});
  ASSERT_TRUE(a && b && bad);
  const std::regex hex16("[0-9a-f]{16}");
  EXPECT_TRUE(std::regex_match(a->get_header_value("X-Request-Id"), hex16)) << a->get_header_value("X-Request-Id");
  EXPECT_NE(a->get_header_value("X-Request-Id"), b->get_header_value("X-Request-Id"));
  EXPECT_TRUE(std::regex_match(bad->get_header_value("X-Request-Id"), hex16)) << "a hostile id must not be echoed";
  auto e = c.Get("/nowhere");  // errors carry it too
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->get_header_value("X-Request-Id").empty());
}

TEST(ServeOps, AccessLogIsOneJsonLinePerRequest) {
  TinyModel m;
  const std::string log = m.dir + "/access.jsonl";
  std::string id;
  {
    vt::ServerProcess server({"--model", m.model, "--access-log", log});
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(30, 0);
    auto p = c.Post("/v1/predict", vt::png_bytes(40, 40, 1), "image/png");
    ASSERT_TRUE(p);
    ASSERT_EQ(p->status, 200);
    id = p->get_header_value("X-Request-Id");
    ASSERT_TRUE(c.Get("/healthz"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(server.stop(), 0);
  }
  std::ifstream f(log);
  std::string line;
  std::vector<json> rows;
  while (std::getline(f, line)) rows.push_back(json::parse(line));  // throws on a bad line
  ASSERT_GE(rows.size(), 2u);
  // Each line is written after its answer, so the two requests (two connections, two worker
  // threads) may log in either order.
  if (rows[0]["route"] != "/v1/predict") std::swap(rows[0], rows[1]);
  const json& p = rows[0];
  for (const char* k : {"time", "request_id", "method", "route", "status", "ms", "images", "client"})
    EXPECT_TRUE(p.contains(k)) << k << " missing in " << p.dump();
  EXPECT_EQ(p["request_id"], id);
  EXPECT_EQ(p["route"], "/v1/predict");
  EXPECT_EQ(p["status"], 200);
  EXPECT_EQ(p["images"], 1);
  EXPECT_EQ(p["client"], "127.0.0.1");
  EXPECT_TRUE(std::regex_match(p["time"].get<std::string>(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  EXPECT_EQ(rows[1]["route"], "/healthz");
  EXPECT_EQ(rows[1]["images"], 0);
}

TEST(ServeOps, CorsPreflightForAllowedOriginsOnly) {
  TinyModel m;
  vt::ServerProcess server({"--model", m.model, "--cors-origin", "https://lab.example"});
  httplib::Client c("127.0.0.1", server.port());
  auto ok = c.Options("/v1/predict", {{"Origin", "https://lab.example"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 204);
  EXPECT_EQ(ok->get_header_value("Access-Control-Allow-Origin"), "https://lab.example");
  EXPECT_NE(ok->get_header_value("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  EXPECT_NE(ok->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
  auto other = c.Options("/v1/predict", {{"Origin", "https://elsewhere.example"}});
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 204);
  EXPECT_FALSE(other->has_header("Access-Control-Allow-Origin"));
  auto get = c.Get("/healthz", {{"Origin", "https://lab.example"}});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->get_header_value("Access-Control-Allow-Origin"), "https://lab.example");
}

TEST(ServeOps, ApiKeyGuardsEveryRouteButHealth) {
  TinyModel m;
  const std::string key = "k3y-0123456789abcdef-XYZ";
  vt::write_file(m.dir + "/keys", "# lab keys\n" + key + "\n");
  vt::ServerProcess server({"--model", m.model, "--api-key-file", m.dir + "/keys"});
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(30, 0);
  auto h = c.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  for (const char* path : {"/", "/v1/classes", "/metrics", "/v1/stats"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer") << path;
    EXPECT_EQ(json::parse(r->body)["error"]["code"], "unauthorized") << path;
    auto wrong = c.Get(path, {{"Authorization", "Bearer " + key + "x"}});
    ASSERT_TRUE(wrong);
    EXPECT_EQ(wrong->status, 401) << path;
    auto right = c.Get(path, {{"Authorization", "Bearer " + key}});
    ASSERT_TRUE(right);
    EXPECT_EQ(right->status, 200) << path;
  }
  auto p = c.Post("/v1/predict", {{"Authorization", "Bearer " + key}}, vt::png_bytes(40, 40, 2), "image/png");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200) << p->body;
  auto np = c.Post("/v1/predict", vt::png_bytes(40, 40, 2), "image/png");
  ASSERT_TRUE(np);
  EXPECT_EQ(np->status, 401);
}

TEST(ServeOps, BeyondLoopbackNeedsAKeyOrInsecure) {
  TinyModel m;
  std::string out, err;
  const std::string bin = VITENGINE_BINARY;
  int rc = vt::run(bin + " serve --model " + m.model + " --host 0.0.0.0 --port 0", &out, &err);
  EXPECT_EQ(rc, 2) << out << err;
  EXPECT_NE(err.find("--api-key-file"), std::string::npos) << err;
  EXPECT_NE(err.find("--insecure"), std::string::npos) << err;
  vt::write_file(m.dir + "/short", "tooshort\n");
  rc = vt::run(bin + " serve --model " + m.model + " --api-key-file " + m.dir + "/short --port 0", &out, &err);
  EXPECT_EQ(rc, 2) << err;
  EXPECT_NE(err.find("shorter than 16"), std::string::npos) << err;
  vt::ServerProcess insecure({"--model", m.model, "--host", "0.0.0.0", "--insecure"});
  httplib::Client c("127.0.0.1", insecure.port());
  auto r = c.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(ServeOps, HttpsWithASelfSignedCertificate) {
  TinyModel m;
  const std::string cert = m.dir + "/cert.pem", key = m.dir + "/key.pem";
  std::string out, err;
  if (vt::run("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout " + key + " -out " + cert,
              &out, &err) != 0)
    GTEST_SKIP() << "no openssl command to make a certificate: " << err;
  vt::ServerProcess server({"--model", m.model, "--tls-cert", cert, "--tls-key", key});
  EXPECT_NE(server.first_line().find("https://"), std::string::npos) << server.first_line();
  httplib::SSLClient tls("127.0.0.1", server.port());
  tls.set_ca_cert_path(cert.c_str());
  tls.enable_server_certificate_verification(false);  // CN=localhost, dialled by IP
  tls.set_read_timeout(30, 0);
  auto h = tls.Get("/healthz");
  ASSERT_TRUE(h) << "TLS handshake failed";
  EXPECT_EQ(h->status, 200);
  auto p = tls.Post("/v1/predict", vt::png_bytes(40, 40, 3), "image/png");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200) << p->body;
  httplib::Client plain("127.0.0.1", server.port());  // plain HTTP to the TLS port gets no answer
  plain.set_read_timeout(2, 0);
  auto no = plain.Get("/healthz");
  EXPECT_TRUE(!no || no->status != 200);
  // A key that is not the certificate's: refused at start, naming the files.
  vt::write_file(m.dir + "/bad.pem", "not a key\n");
  int rc = vt::run(std::string(VITENGINE_BINARY) + " serve --model " + m.model + " --port 0 --tls-cert " + cert +
                       " --tls-key " + m.dir + "/bad.pem",
                   &out, &err);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("bad.pem"), std::string::npos) << err;
}

// 256 connections that send half a request line and then nothing: health checks still answer
// within 1 s and a prediction succeeds, while they are held open.
TEST(ServeOps, IdleHalfOpenConnectionsDoNotStarveHealthChecks) {
  TinyModel m;
  vt::ServerProcess server({"--model", m.model});
  std::vector<int> socks;
  for (int i = 0; i < 256; ++i) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(s, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(server.port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << "connection " << i;
    const char* half = "POST /v1/predict HTTP/1.1\r\nHost: x\r\n";
    ASSERT_GT(send(s, half, strlen(half), 0), 0);
    socks.push_back(s);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(10, 0);
  double worst = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto h = c.Get("/healthz");
    worst = std::max(worst, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
  }
  std::printf("    slowest of 5 health checks with 256 idle connections open: %.1f ms\n", worst * 1e3);
  EXPECT_LT(worst, 1.0) << "a health check took " << worst << " s with 256 idle connections open";
  auto p = c.Post("/v1/predict", vt::png_bytes(40, 40, 4), "image/png");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200);
  for (int s : socks) close(s);
  EXPECT_TRUE(server.alive());
}

}  // namespace

namespace {

// Sends raw bytes on a fresh connection and returns what comes back until the server closes it or
// `wait_s` passes without a byte (a request that never completes).
std::string raw_exchange(int port, const std::string& bytes, double wait_s = 3) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "(connect failed)";
  timeval tv{int(wait_s), int((wait_s - int(wait_s)) * 1e6)};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = send(s, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may stop reading (413) before everything is sent
    off += size_t(n);
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(s, buf, sizeof buf, 0)) > 0;) out.append(buf, size_t(n));
  close(s);
  return out;
}

// A client socket that reads exactly one HTTP response at a time (headers, then Content-Length
// bytes), so that a test can send the next request on the same connection.
class RawConnection {
 public:
  explicit RawConnection(int port) : s_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(s_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    set_timeout_ms(5000);
  }
  ~RawConnection() { close(s_); }
  void set_timeout_ms(int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    setsockopt(s_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void send_all(const std::string& bytes) {
    for (size_t off = 0; connected_ && off < bytes.size();) {
      const ssize_t n = send(s_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += size_t(n);
    }
  }
  // One response, or what came before the connection closed or the timeout (5 s) passed.
  std::string read_response() {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos && fill()) {
    }
    if (end == std::string::npos) return std::exchange(buf_, "");
    std::smatch cl;
    const std::string head = buf_.substr(0, end);
    const size_t len = std::regex_search(head, cl, std::regex("Content-Length: *([0-9]+)", std::regex::icase))
                           ? std::stoul(cl[1].str())
                           : 0;
    while (buf_.size() < end + 4 + len && fill()) {
    }
    const size_t take = std::min(buf_.size(), end + 4 + len);
    std::string r = buf_.substr(0, take);
    buf_.erase(0, take);
    return r;
  }

 private:
  bool fill() {
    char b[4096];
    const ssize_t n = connected_ ? recv(s_, b, sizeof b, 0) : 0;
    if (n > 0) buf_.append(b, size_t(n));
    return n > 0;
  }
  int s_;
  bool connected_ = false;
  std::string buf_;
};

int status_of(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : -1;
}

}  // namespace

// What a hostile or broken client sends: each gets a 4xx (or the connection closed without
// an answer for a request that never became one), and the service keeps serving.
TEST(ServeOps, MalformedRequestsGet4xxAndTheServiceKeepsServing) {
  TinyModel m;
  vt::ServerProcess server({"--model", m.model, "--max-upload-mb", "2"});
  const int port = server.port();
  const std::string png = vt::png_bytes(32, 32, 5);
  const std::string head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  auto multipart = [&](const std::string& parts, const std::string& boundary = "BOUND") {
    return head + "Content-Type: multipart/form-data; boundary=" + boundary +
           "\r\nContent-Length: " + std::to_string(parts.size()) + "\r\n\r\n" + parts;
  };
  const std::string part =
      "--BOUND\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
      "Content-Type: image/png\r\n\r\n" +
      png + "\r\n";
  struct Case {
    const char* what;
    std::string bytes;
  };
  std::string tiny_parts;
  for (int i = 0; i < 10000; ++i)
    tiny_parts += "--BOUND\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nx\r\n";
  tiny_parts += "--BOUND--\r\n";
  std::vector<Case> cases = {
      {"truncated multipart", multipart(part.substr(0, part.size() / 2))},
      {"Content-Length longer than the body",
       head + "Content-Type: image/png\r\nContent-Length: " + std::to_string(png.size() + 500) + "\r\n\r\n" + png},
      {"a 1 GB declared body", head + "Content-Type: image/png\r\nContent-Length: 1073741824\r\n\r\n" + png},
      {"10,000 tiny parts", multipart(tiny_parts)},
      {"a non-image with an image Content-Type",
       head + "Content-Type: image/png\r\nContent-Length: 11\r\n\r\nhello world"},
      {"an oversized header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70000, 'a') + "\r\n\r\n"},
      {"a garbage request line", "BLAH\r\n\r\n"},
  };
  for (const auto& c : cases) {
    const std::string r = raw_exchange(port, c.bytes);
    const int st = status_of(r);
    std::printf("    %-40s -> %s\n", c.what, r.empty() ? "closed, no answer" : r.substr(0, r.find('\r')).c_str());
    if (std::string(c.what) == "a 1 GB declared body")
      EXPECT_EQ(st, 413) << "refused from its Content-Length alone: " << r.substr(0, 200);
    EXPECT_TRUE(r.empty() || (st >= 400 && st < 500)) << c.what << ": got " << r.substr(0, 200);
    // ... and the service still answers.
    httplib::Client hc("127.0.0.1", port);
    hc.set_read_timeout(10, 0);
    auto h = hc.Get("/healthz");
    ASSERT_TRUE(h) << "no answer after " << c.what;
    EXPECT_EQ(h->status, 200) << "after " << c.what;
  }
  httplib::Client hc("127.0.0.1", port);
  hc.set_read_timeout(30, 0);
  auto p = hc.Post("/v1/predict", png, "image/png");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200) << p->body;
  EXPECT_TRUE(server.alive());
}

// SIGTERM drains: a prediction in flight (32 cells through the shipped model, about a second on
// two cores) still gets its 200, a request that arrives meanwhile gets 503 shutting_down with
// Retry-After, and the process exits 0.
TEST(ServeOps, SigtermFinishesWhatIsInFlightAndRefusesTheRest) {
  const std::string model = std::string(VITENGINE_SOURCE_DIR) + "/weights/shipped/model.vit";
  vt::ServerProcess server({"--model", model, "--max-batch", "4"});
  httplib::MultipartFormDataItems many;
  for (int i = 0; i < 32; ++i) many.push_back({"image", vt::png_bytes(96, 96, uint32_t(i + 1)), "c.png", "image/png"});
  auto inflight = std::async(std::launch::async, [&] {
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(60, 0);
    return c.Post("/v1/predict", many);
  });
  // Wait until the 32 images are queued or running, then ask the service to stop.
  httplib::Client probe("127.0.0.1", server.port());
  bool busy = false;
  for (int i = 0; i < 400 && !busy; ++i) {
    auto st = probe.Get("/v1/stats");
    busy = st && st->status == 200 &&
           json::parse(st->body)["images"].get<int>() + json::parse(st->body)["queue_depth"].get<int>() > 0;
    if (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(busy) << "the 32-image request never reached the model";
  server.terminate();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  httplib::Client late("127.0.0.1", server.port());
  auto refused = late.Get("/v1/classes");
  auto done = inflight.get();
  ASSERT_TRUE(done) << "the request in flight was cut off";
  EXPECT_EQ(done->status, 200) << done->body.substr(0, 300);
  std::printf("    during the drain: %s\n",
              refused ? ("HTTP " + std::to_string(refused->status)).c_str() : "no connection");
  if (refused) {  // the listener may already be closed if the drain was quicker than this client
    EXPECT_EQ(refused->status, 503) << refused->body;
    EXPECT_EQ(json::parse(refused->body)["error"]["code"], "shutting_down");
    EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
  }
  EXPECT_EQ(server.stop(), 0);
}

// A request refused before its body is read (PUT on a POST route, POST on a GET route, a missing
// key) must still have its body consumed: the next request on the same keep-alive connection gets
// its own answer, not a 400 made from the leftover body (what schemathesis once caught).
TEST(ServeOps, RefusedRequestsWithABodyKeepTheConnectionInStep) {
  TinyModel m;
  const std::string key = "k3y-0123456789abcdef-XYZ";
  vt::write_file(m.dir + "/keys", key + "\n");
  vt::ServerProcess server({"--model", m.model, "--api-key-file", m.dir + "/keys"});
  const std::string body = "--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n" +
                           vt::png_bytes(16, 16, 1) + "\r\n--B--\r\n";
  for (const std::string first : {"PUT /v1/predict", "POST /v1/stats", "DELETE /v1/classes", "POST /v1/predict"}) {
    // One connection, one request after the other, as a keep-alive client sends them (httplib
    // does not answer pipelined requests, so the second is sent after the first answer).
    RawConnection conn(server.port());
    // The body in a later segment than the headers, as a large upload arrives: a server that
    // answered from the headers alone would find the body where the next request should be.
    conn.send_all(first + " HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n" +
                  "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    conn.send_all(body);
    const std::string r1 = conn.read_response();
    EXPECT_EQ(status_of(r1), first == "POST /v1/predict" ? 401 : 405) << first << ": " << r1.substr(0, 200);
    conn.send_all("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const std::string r2 = conn.read_response();
    EXPECT_EQ(status_of(r2), 200) << first << ": the next request got " << r2.substr(0, 200);
    EXPECT_EQ(r2.find("bad_request"), std::string::npos) << first << ": the body was parsed as a request";
  }
}

// A body httplib does not read (a GET or TRACE carrying one; a multipart body without a boundary,
// which httplib refuses before reading; any request whose request line httplib cannot parse, such
// as the QUERY method, or whose URI is too long) stays in the socket. The answer must close the connection,
// and a request hidden in that body must not be served: on the old server the client read a 400
// made from the leftover bytes as the answer to its next request (schemathesis: "connection
// aborted"), and the hidden GET /v1/classes got a 200.
TEST(ServeOps, BodiesTheServerDoesNotReadCloseTheConnection) {
  TinyModel m;
  vt::ServerProcess server({"--model", m.model});
  const std::string hidden = "GET /v1/classes HTTP/1.1\r\nHost: x\r\n\r\n";
  struct Case {
    std::string head;
    int status;
  };
  for (const Case& c : {Case{"TRACE /v1/explain HTTP/1.1\r\n", 405}, Case{"GET /v1/predict HTTP/1.1\r\n", 405},
                        Case{"GET /healthz HTTP/1.1\r\n", 200},
                        Case{"POST /v1/predict HTTP/1.1\r\nContent-Type: multipart/form-data\r\n", 400},
                        Case{"QUERY /v1/predict HTTP/1.1\r\n", 400},
                        Case{"GET /healthz?" + std::string(9000, 'a') + " HTTP/1.1\r\n", 414}}) {
    RawConnection conn(server.port());
    conn.set_timeout_ms(1500);
    // The body in its own segment, as clients send it: httplib looks for a next request only when
    // the socket has new bytes (it ignores what its read buffer already holds).
    conn.send_all(c.head + "Host: x\r\nContent-Length: " + std::to_string(hidden.size()) + "\r\n\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    conn.send_all(hidden);
    const std::string r1 = conn.read_response();
    const std::string what = c.head.substr(0, 40);
    EXPECT_EQ(status_of(r1), c.status) << what << r1.substr(0, 300);
    EXPECT_NE(r1.find("Connection: close"), std::string::npos) << what << r1.substr(0, 300);
    // Whatever else arrives (until the server closes or 5 s pass) must not serve the hidden request.
    std::string rest;
    for (std::string r; !(r = conn.read_response()).empty();) rest += r;
    EXPECT_EQ(rest.find("200 OK"), std::string::npos) << what << "the hidden request was served: " << rest.substr(0, 300);
    EXPECT_EQ(rest.find("\"classes\""), std::string::npos) << what << rest.substr(0, 300);
  }
  // A well-formed keep-alive exchange is untouched: requests on one connection, each answered,
  // a POST to no route included (httplib reads its body before it finds no route).
  RawConnection conn(server.port());
  conn.send_all("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string a = conn.read_response();
  EXPECT_EQ(status_of(a), 200);
  EXPECT_EQ(a.find("Connection: close"), std::string::npos) << a.substr(0, 300);
  conn.send_all("POST /no/such/route HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  const std::string nf = conn.read_response();
  EXPECT_EQ(status_of(nf), 404) << nf.substr(0, 300);
  EXPECT_EQ(nf.find("Connection: close"), std::string::npos) << nf.substr(0, 300);
  conn.send_all("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(status_of(conn.read_response()), 200);
}

// `vitengine ood-ref` picks the threshold on a prepared set's val split for the asked false-alarm
// rate and stores it; serve then returns the flag (and null for a model without a threshold).
// serve --map: each result's target, read here from the response's own class probabilities and
// the map file: rule other, the top class's target ("other" when unmapped); rule restrict, the
// target with the most summed probability, renormalised over the targets.
TEST(ServeOps, ALabelMapNamesEachResultsTarget) {
  TinyModel m;
  const std::string map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  const json mj = json::parse(vt::read_file(map));
  httplib::MultipartFormDataItems items;
  for (int i = 0; i < 6; ++i)
    items.push_back({"image", vt::png_bytes(40, 40, 11 * i + 1), "c" + std::to_string(i) + ".png", "image/png"});
  for (const std::string rule : {"other", "restrict"}) {
    vt::ServerProcess server({"--model", m.model, "--map", map, "--map-rule", rule});
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(30, 0);
    auto r = c.Post("/v1/predict", items);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    for (const json& res : json::parse(r->body)["results"]) {
      ASSERT_TRUE(res.contains("target")) << res.dump();
      std::map<std::string, double> mass;
      double in_map = 0;
      for (const auto& [cls, p] : res["probabilities"].items())
        if (mj["map"].contains(cls)) mass[mj["map"][cls].get<std::string>()] += p.get<double>(), in_map += p.get<double>();
      std::string want = mj["map"].value(res["prediction"].get<std::string>(), std::string("other"));
      if (rule == "restrict")
        want = std::max_element(mass.begin(), mass.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
      EXPECT_EQ(res["target"]["name"], want) << res.dump();
      EXPECT_EQ(res["target"]["rule"], rule);
      EXPECT_EQ(res["target"]["map"], "bccd5");
      if (want != "other")
        EXPECT_NEAR(res["target"]["probability"].get<double>(), mass[want] / (rule == "restrict" ? in_map : 1.0), 1e-5);
    }
    EXPECT_EQ(server.stop(), 0);
  }
  std::string so, se;
  EXPECT_NE(vt::run(std::string(VITENGINE_BINARY) + " serve --port 0 --model " + m.model + " --map " + m.model, &so, &se),
            0);
  EXPECT_NE(se.find("label map"), std::string::npos) << se;
}

// ood-ref on a folder of class folders (no splits) fitted the statistics on every image and chose
// the threshold on the same images, reporting the asked share flagged while new images of the same
// lab were flagged far more often; so did --fit-split val --split val on a prepared set. Both are
// refused naming an image the test knows is in both, and nothing is written.
TEST(ServeOps, OodRefRefusesAThresholdChosenOnTheFittedImages) {
  TinyModel m;
  const std::string src = m.dir + "/src";
  for (const char* cls : {"Lymphocyte", "Monocyte"}) {
    std::filesystem::create_directories(src + "/" + cls);
    for (int i = 0; i < 20; ++i)  // distinct images: prepare drops a copy found under two labels
      vt::write_file(src + "/" + cls + "/c" + std::to_string(i) + ".png",
                     vt::png_bytes(36 + i, 40, (cls[0] == 'L' ? 0 : 500) + i * 7));
  }
  const std::string bin = VITENGINE_BINARY, prep = m.dir + "/prep", out = m.dir + "/ood.vit";
  std::string so, se;
  EXPECT_NE(vt::run(bin + " ood-ref --model " + m.model + " --data " + src + " --out " + out, &so, &se), 0);
  EXPECT_NE(se.find("'" + src + "/Lymphocyte/c0.png' is both in the --fit-split 'train'"), std::string::npos) << se;
  ASSERT_EQ(vt::run(bin + " prepare " + src + " --out " + prep +
                        " --labels folders --split 40/40/20 --near-threshold -1 --size 32 --quiet",
                    &so, &se),
            0)
      << se;
  EXPECT_NE(vt::run(bin + " ood-ref --model " + m.model + " --data " + prep + " --fit-split val --out " + out, &so, &se),
            0);
  EXPECT_NE(se.find("is both in the --fit-split 'val'"), std::string::npos) << se;
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_EQ(vt::run(bin + " ood-ref --model " + m.model + " --data " + prep + " --out " + out, &so, &se), 0) << se;
}

TEST(ServeOps, OodThresholdFromValAndTheFlagInServeJson) {
  TinyModel m;
  const std::string src = m.dir + "/src";
  for (const char* cls : {"Lymphocyte", "Monocyte"}) {
    std::filesystem::create_directories(src + "/" + cls);
    for (int i = 0; i < 20; ++i)
      vt::write_file(src + "/" + cls + "/c" + std::to_string(i) + ".png",
                     vt::png_bytes(36 + i, 40, (cls[0] == 'L' ? 0 : 500) + i * 7));
  }
  const std::string bin = VITENGINE_BINARY, prep = m.dir + "/prep", out = m.dir + "/ood.vit";
  std::string so, se;
  ASSERT_EQ(vt::run(bin + " prepare " + src + " --out " + prep +
                        " --labels folders --split 40/40/20 --near-threshold -1 --size 32 --quiet",
                    &so, &se),
            0)
      << se;
  ASSERT_EQ(vt::run(bin + " ood-ref --model " + m.model + " --data " + prep + " --out " + out + " --fpr 0.25 --against " +
                        src + "/Monocyte",
                    &so, &se),
            0)
      << se;
  const json card = vit::load_model(out).meta.extra["ood"];
  const double n = card["images"].get<double>();
  EXPECT_GT(n, 10);
  EXPECT_EQ(card["score"], "mahalanobis");  // the default: statistics of the train split's features
  EXPECT_EQ(card["fit"]["split"], "train");
  EXPECT_EQ(card["fit"]["groups"], "the model's classes");
  EXPECT_EQ(card["mahalanobis"]["dim"], 32);
  EXPECT_NEAR(card["flagged_share_on_split"].get<double>(), 0.25, 1.0 / n + 1e-9) << card.dump(1).substr(0, 400);
  EXPECT_TRUE(card["auroc"]["value"].is_number());
  // eval scores the val split through its own batched path (features gathered by predict()): the
  // same images must be flagged at the same rate.
  ASSERT_EQ(vt::run(bin + " eval --model " + out + " --data " + prep + " --split val --out " + m.dir + "/ev", &so, &se),
            0)
      << se;
  const json ev = json::parse(vt::read_file(m.dir + "/ev/metrics.json"))["ood"];
  EXPECT_EQ(ev["score"], "mahalanobis");
  EXPECT_NEAR(ev["flagged_share"].get<double>(), 0.25, 1.0 / n + 1e-9) << ev.dump();
  // The energy score stays on offer, with no statistics.
  ASSERT_EQ(vt::run(bin + " ood-ref --score energy --model " + m.model + " --data " + prep + " --out " + m.dir +
                        "/energy.vit --fpr 0.25",
                    &so, &se),
            0)
      << se;
  const json ecard = vit::load_model(m.dir + "/energy.vit").meta.extra["ood"];
  EXPECT_EQ(ecard["score"], "energy");
  EXPECT_FALSE(ecard.contains("mahalanobis"));
  EXPECT_NEAR(ecard["flagged_share_on_split"].get<double>(), 0.25, 1.0 / n + 1e-9);
  // Labels the model does not know (a new lab's, for a model adapted to it) group the statistics
  // as well: the score is the distance to the nearest group, whatever it is called.
  const std::string other = m.dir + "/other", oprep = m.dir + "/oprep";
  for (const char* g : {"slide_a", "slide_b"}) {
    std::filesystem::create_directories(other + "/" + g);
    for (int i = 0; i < 20; ++i)
      vt::write_file(other + "/" + g + "/c" + std::to_string(i) + ".png",
                     vt::png_bytes(36 + i, 40, (g[6] == 'a' ? 2000 : 2500) + i * 7));
  }
  ASSERT_EQ(vt::run(bin + " prepare " + other + " --out " + oprep +
                        " --labels folders --split 40/40/20 --near-threshold -1 --size 32 --quiet",
                    &so, &se),
            0)
      << se;
  ASSERT_EQ(vt::run(bin + " ood-ref --model " + m.model + " --data " + oprep + " --out " + m.dir + "/o.vit --fpr 0.25",
                    &so, &se),
            0)
      << se;
  // Statistics of another width (another model's, pasted in) are refused by eval, naming the file.
  {
    vit::LoadedModel lm = vit::load_model(out);
    json& st = lm.meta.extra["ood"]["mahalanobis"];
    st["dim"] = 2;
    st["means"] = std::vector<double>(st["classes"].size() * 2, 0.0);
    st["whiten_lower"] = {1.0, 0.0, 1.0};
    vit::save_model(m.dir + "/foreign.vit", *lm.model, lm.meta);
    EXPECT_NE(vt::run(bin + " eval --model " + m.dir + "/foreign.vit --data " + prep + " --split val --out " + m.dir +
                          "/evf",
                      &so, &se),
              0);
    EXPECT_NE(se.find("foreign.vit' stores Mahalanobis statistics of 2 features"), std::string::npos) << se;
  }
  const json ocard = vit::load_model(m.dir + "/o.vit").meta.extra["ood"];
  EXPECT_EQ(ocard["fit"]["groups"], "the data's labels");
  EXPECT_EQ(ocard["mahalanobis"]["labels"], json({"slide_a", "slide_b"}));
  EXPECT_EQ(ocard["mahalanobis"]["classes"], json({0, 1}));
  EXPECT_NEAR(ocard["flagged_share_on_split"].get<double>(), 0.25, 1.0 / ocard["images"].get<double>() + 1e-9);
  const std::string body = vt::png_bytes(40, 40, 3);
  for (const std::string& model : {out, m.model}) {
    vt::ServerProcess server({"--model", model});
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(30, 0);
    auto r = c.Post("/v1/predict", httplib::MultipartFormDataItems{{"image", body, "a.png", "image/png"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json body_json = json::parse(r->body), res = body_json["results"][0];
    EXPECT_TRUE(res["ood_score"].is_number());
    // The response says how the score reads: which one, and the threshold (null without one).
    EXPECT_EQ(body_json["ood"]["score"], model == out ? "mahalanobis" : "energy") << body_json["ood"].dump();
    EXPECT_EQ(body_json["ood"]["threshold"].is_null(), model != out);
    if (model == out) {
      EXPECT_DOUBLE_EQ(body_json["ood"]["threshold"].get<double>(), card["threshold"].get<double>());
      ASSERT_TRUE(res["unlike_training_data"].is_boolean()) << res.dump();
      EXPECT_EQ(res["unlike_training_data"].get<bool>(), res["ood_score"].get<double>() > card["threshold"].get<double>());
    } else {
      EXPECT_TRUE(res["unlike_training_data"].is_null()) << res.dump();
    }
    EXPECT_EQ(server.stop(), 0);
  }
}
