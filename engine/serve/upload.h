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

// The images of a request, at most max_n, in the three ways clients send them:
//   multipart/form-data, field "image" (repeatable; browsers, curl -F);
//   a raw body whose Content-Type is image/* (one image; ?name= names it; curl --data-binary);
//   application/json {"images": [{"name": "a.png", "data": "<base64>"}, ...]} (or one "image": "<base64>").
// Anything else is 415 unsupported_media_type. Throws HttpError.
std::vector<std::pair<std::string, Image>> read_images(const httplib::Request& req, size_t max_n, int max_dim);

// Standard base64 (RFC 4648, padding optional, whitespace skipped); throws HttpError 400 bad_base64.
std::string base64_decode(const std::string& in, const std::string& what);

}  // namespace vit
