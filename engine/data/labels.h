// Labelers for `vitengine prepare` that need no application: the ImageFolder convention and a
// CSV of path,label[,split]. An application adds its own (engine/wbc: file-name prefixes).
#pragma once
#include <string>
#include <vector>

#include "engine/data/prepare.h"  // Labeler

namespace vit {

// A classifier needs two classes; a thousand is ImageNet's count and bounds what the reports draw.
constexpr int kMinClasses = 2, kMaxClasses = 1000;

// The class folders of SRC/<class>/... (any depth below <class>), as torchvision's ImageFolder:
// every top-level folder of every SRC holding at least one image file is a class, named by the
// folder (any UTF-8), in sorted byte order. Files directly in a SRC have no class. Folders whose
// name starts with '.' are skipped. Throws std::runtime_error when there are fewer than
// kMinClasses or more than kMaxClasses classes. Files under `skip` (an absolute_path, engine/util/file.h:
// prepare's --out inside a SRC, whose topup/ holds class folders of its own) are no data.
Labeler folder_labeler(const std::vector<std::string>& srcs, const std::string& skip = "");

// Labels from a CSV with a header naming the columns `path` and `label` and, optionally,
// `split` (train, val, test or empty). A path is relative to the SRC it lies in, or absolute.
// The classes are the distinct labels in sorted byte order. Throws std::runtime_error naming
// file:line for a malformed row, and when no listed file exists under any SRC; listed files that
// are missing become warnings.
Labeler csv_labeler(const std::string& csv_path, const std::vector<std::string>& srcs);

// Every file with an image extension under the SRCs but not under `skip`: (SRC, path relative to it), in
// path order.
std::vector<std::pair<std::string, std::string>> image_files_under(const std::vector<std::string>& srcs,
                                                                   const std::string& skip = "");

// How many of `files` the labeler gives a class (auto-detection of the labelling).
size_t count_labelled(const Labeler& L, const std::vector<std::pair<std::string, std::string>>& files);

// Throws std::runtime_error unless the class list has kMinClasses..kMaxClasses distinct,
// non-empty names without control characters; `what` names its source.
void check_class_list(const std::vector<std::string>& classes, const std::string& what);

}  // namespace vit
