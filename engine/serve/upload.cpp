#include "engine/serve/upload.h"

#include <httplib.h>

#include <algorithm>
#include <iterator>

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
    throw HttpError(415, "not_an_image", "'" + name + "' is not a JPEG, PNG or BMP image");
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

std::vector<std::pair<std::string, Image>> read_images(const httplib::Request& req, size_t max_n, int max_dim) {
  if (!req.is_multipart_form_data())
    throw HttpError(415, "not_multipart", "send the image as multipart/form-data in the field 'image'");
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
