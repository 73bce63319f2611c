#include "engine/serve/upload.h"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <nlohmann/json.hpp>

namespace vit {

std::string display_name(const std::string& filename, size_t i) {
  const size_t slash = filename.find_last_of("/\\");
  const std::string base = filename.substr(slash == std::string::npos ? 0 : slash + 1);
  std::string out;
  for (char c : base)
    if (c >= 0x20 && c < 0x7f) out += c;
  if (out.size() > 100) out.resize(100);
  return out.empty() ? "image" + std::to_string(i + 1) : out;
}

Image decode_upload(const std::string& content, const std::string& name, int max_dim) {
  if (content.empty()) throw HttpError(400, "empty_file", "'" + name + "' is empty");
  const auto* bytes = reinterpret_cast<const uint8_t*>(content.data());
  int w = 0, h = 0;
  if (!image_dimensions(bytes, content.size(), &w, &h))
    throw HttpError(415, "not_an_image", "'" + name + "' is not a JPEG, PNG, BMP or TIFF image");
  if (w <= 0 || h <= 0 || w > max_dim || h > max_dim)
    throw HttpError(413, "image_too_large",
                    "'" + name + "' is " + std::to_string(w) + "x" + std::to_string(h) + "; the limit is " +
                        std::to_string(max_dim) + " pixels a side");
  // stb_image pads a cut-off JPEG with zeros and reports success: require the end-of-image marker.
  if (content.size() >= 2 && uint8_t(content[0]) == 0xFF && uint8_t(content[1]) == 0xD8) {
    const size_t from = content.size() > 4096 ? content.size() - 4096 : 2;
    if (content.find("\xFF\xD9", from) == std::string::npos)
      throw HttpError(400, "truncated_image", "'" + name + "' is a truncated JPEG (no end-of-image marker)");
  }
  try {
    return decode_image(bytes, content.size(), name);
  } catch (const std::exception& e) {
    throw HttpError(400, "bad_image", e.what());
  }
}

std::string base64_decode(const std::string& in, const std::string& what) {
  auto value = [](unsigned char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (unsigned char c : in) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++pad;
      continue;
    }
    const int v = value(c);
    if (v < 0 || pad) throw HttpError(400, "bad_base64", what + " is not valid base64");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xFF));
    }
  }
  if (pad > 2 || bits >= 6) throw HttpError(400, "bad_base64", what + " is not valid base64");
  return out;
}

namespace {

std::string media_type(const httplib::Request& req) {
  std::string ct = req.get_header_value("Content-Type");
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && ct.back() == ' ') ct.pop_back();
  std::transform(ct.begin(), ct.end(), ct.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ct;
}

void check_count(size_t n, size_t max_n) {
  if (n == 0) throw HttpError(400, "missing_field", "the request holds no image");
  if (n > max_n)
    throw HttpError(413, "too_many_images",
                    std::to_string(n) + " images in one request; the limit is " + std::to_string(max_n));
}

// {"images": [{"name", "data"}, ...]} or {"image": "<base64>"}.
std::vector<std::pair<std::string, Image>> json_images(const std::string& body, size_t max_n, int max_dim) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    throw HttpError(400, "bad_json",
                    "the body is not a JSON object: send {\"images\": [{\"name\", \"data\": base64}]}");
  for (const auto& [k, v] : j.items())
    if (k != "images" && k != "image") throw HttpError(400, "bad_json", "unknown key '" + display_name(k, 0) + "'");
  nlohmann::json list = nlohmann::json::array();
  if (j.contains("image") && j["image"].is_string()) list.push_back({{"data", j["image"]}});
  if (j.contains("images")) {
    if (!j["images"].is_array()) throw HttpError(400, "bad_json", "'images' must be an array");
    for (const auto& e : j["images"]) list.push_back(e);
  }
  // Every entry's shape first, then the count: a malformed body is 400 whatever its length.
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& e = list[i];
    if (!e.is_object() || !e.contains("data") || !e["data"].is_string())
      throw HttpError(400, "bad_json", "image " + std::to_string(i + 1) + " has no base64 string 'data'");
    for (const auto& [k, v] : e.items())
      if ((k != "name" && k != "data") || (k == "name" && !v.is_string()))
        throw HttpError(400, "bad_json",
                        "image " + std::to_string(i + 1) + ": unexpected '" + display_name(k, 0) + "'");
  }
  check_count(list.size(), max_n);
  std::vector<std::pair<std::string, Image>> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string name = display_name(list[i].value("name", std::string()), i);
    out.emplace_back(name,
                     decode_upload(base64_decode(list[i]["data"].get<std::string>(), "'" + name + "'"), name, max_dim));
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, Image>> read_images(const httplib::Request& req, size_t max_n, int max_dim) {
  const std::string type = media_type(req);
  if (type.rfind("image/", 0) == 0) {
    check_count(req.body.empty() ? 0 : 1, max_n);
    const std::string name = display_name(req.has_param("name") ? req.get_param_value("name") : "", 0);
    return {{name, decode_upload(req.body, name, max_dim)}};
  }
  if (type == "application/json") return json_images(req.body, max_n, max_dim);
  if (!req.is_multipart_form_data())
    throw HttpError(415, "unsupported_media_type",
                    "send multipart/form-data (field 'image'), a raw image/* body, or JSON {\"images\": [{\"name\", "
                    "\"data\": base64}]}; got Content-Type '" +
                        req.get_header_value("Content-Type") + "'");
  auto range = req.files.equal_range("image");
  const size_t n = size_t(std::distance(range.first, range.second));
  if (n == 0) {
    std::string got;
    for (const auto& kv : req.files) got += (got.empty() ? "" : ", ") + display_name(kv.first, 0);
    throw HttpError(400, "missing_field",
                    "no field 'image' in the upload" + (got.empty() ? "" : " (got: " + got + ")"));
  }
  if (n > max_n)
    throw HttpError(413, "too_many_images",
                    std::to_string(n) + " images in one request; the limit is " + std::to_string(max_n));
  std::vector<std::pair<std::string, Image>> out;
  size_t i = 0;
  for (auto it = range.first; it != range.second; ++it, ++i) {
    std::string name = display_name(it->second.filename, i);
    out.emplace_back(name, decode_upload(it->second.content, name, max_dim));
  }
  return out;
}

}  // namespace vit
