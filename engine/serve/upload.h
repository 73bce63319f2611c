// Uploads: the checks a request's images pass before they reach the model, and the one error
// type the routes turn into a status and a JSON body. Nothing the client sends is used as a path.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/data/image.h"

namespace httplib {
struct Request;
}

namespace vit {

// An error that maps to an HTTP status and {"error": {"code", "message"}}.
struct HttpError : std::runtime_error {
  int status;
  std::string code;
  HttpError(int s, std::string c, const std::string& msg) : std::runtime_error(msg), status(s), code(std::move(c)) {}
};

// Upload names are shown back, never opened: the last path component, printable ASCII, 100 chars.
std::string display_name(const std::string& filename, size_t i);

// Checks and decodes one uploaded file: empty, not an image, larger than max_dim a side (read
// from the header, before decoding), a JPEG cut short. Throws HttpError.
Image decode_upload(const std::string& bytes, const std::string& name, int max_dim);

// The images of a multipart request, field "image", at most max_n. Throws HttpError.
std::vector<std::pair<std::string, Image>> read_images(const httplib::Request& req, size_t max_n, int max_dim);

}  // namespace vit
