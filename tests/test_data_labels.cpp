// `prepare` for any image set: class folders (2 and 150 classes, names in any UTF-8), a CSV with
// a fixed split, classes too small to split, the class-count bounds and --labels auto.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include "engine/data/dataset.h"
#include "engine/data/labels.h"
#include "engine/data/prepare.h"
#include "engine/util/file.h"
#include "tests/data_test_util.h"

using namespace vit;
using namespace vit::testutil;
using nlohmann::json;

namespace {

// n noise images per class folder, each folder one brightness, some one level deeper.
void write_class_folders(const fs::path& root, const std::vector<std::string>& classes, int n, int side = 16,
                         uint32_t seed = 11) {
  for (size_t c = 0; c < classes.size(); ++c)
    for (int i = 0; i < n; ++i) {
      const fs::path dir = i % 3 == 0 ? root / classes[c] / "deeper" / "still" : root / classes[c];
      fs::create_directories(dir);
      write_png((dir / ("img" + std::to_string(i) + ".png")).string(),
                noise_image(side, side, seed++, 30 + int(c * 7 % 190)));
    }
}

PrepareOptions options(Labeler L, const fs::path& src, const fs::path& out, int side = 16) {
  PrepareOptions o;
  o.labeler = std::move(L);
  o.srcs = {src.string()};
  o.out = out.string();
  o.seed = 5;
  o.size = side;
  o.min_side = 8;
  return o;
}

std::map<std::string, std::map<std::string, int>> split_counts(const Manifest& m) {
  std::map<std::string, std::map<std::string, int>> c;  // split -> class -> n
  for (const auto& s : m.samples) ++c[s.split][m.classes[size_t(s.label)]];
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DataLabels, TwoClassFoldersWithEveryCheck) {
  TempDir d("labels2");
  const fs::path src = d.path / "pets", out = d.path / "p";
  write_class_folders(src, {"cats", "dogs"}, 30);
  // Planted faults, as prepare finds them in cell folders: an exact duplicate inside a class,
  // the same bytes in both classes (a conflict), an unreadable file, a file outside any class.
  fs::copy_file(src / "cats" / "img1.png", src / "cats" / "copy.png");
  fs::copy_file(src / "dogs" / "img2.png", src / "cats" / "stolen.png");
  write_bytes(src / "dogs" / "broken.jpg", {0xFF, 0xD8, 0xFF, 0x00});
  fs::copy_file(src / "dogs" / "img4.png", src / "loose.png");
  json rep = prepare_dataset(options(folder_labeler({src.string()}), src, out));
  EXPECT_EQ(rep["classes"], json({"cats", "dogs"}));
  EXPECT_EQ(rep["labels"], "folders");
  EXPECT_EQ(rep["orientation_free"], false);
  EXPECT_EQ(rep["unreadable"].size(), 1u);
  ASSERT_EQ(rep["unknown_label"].size(), 1u);
  EXPECT_EQ(rep["unknown_label"][0]["path"], "loose.png");
  EXPECT_EQ(rep["label_conflicts"].size(), 1u);
  EXPECT_EQ(rep["exact_duplicate_groups"], 2u);
  const Manifest m = read_manifest((out / "manifest.csv").string());
  EXPECT_EQ(m.classes, (std::vector<std::string>{"cats", "dogs"}));
  // cats: 30 (copy.png joins img1.png, stolen.png is dropped with dogs/img2.png); dogs: 29.
  EXPECT_EQ(m.samples.size(), 59u);
  auto c = split_counts(m);
  for (const char* sp : {"train", "val", "test"})
    for (const char* cls : {"cats", "dogs"}) EXPECT_GT(c[sp][cls], 0) << sp << " " << cls;
  // The files one level deeper keep their class.
  bool deep = false;
  for (const auto& s : m.samples) deep = deep || s.path.find("deeper/still/") != std::string::npos;
  EXPECT_TRUE(deep);
  // Train-only statistics exist and the seed makes it reproducible.
  EXPECT_TRUE(rep["mean"].is_array());
  json again = prepare_dataset(options(folder_labeler({src.string()}), src, d.path / "q"));
  EXPECT_EQ(read_bytes(out / "manifest.csv").size(), read_bytes(d.path / "q" / "manifest.csv").size());
  EXPECT_EQ(read_manifest((d.path / "q" / "manifest.csv").string()).samples.size(), m.samples.size());
}

TEST(DataLabels, HundredFiftyClasses) {
  TempDir d("labels150");
  std::vector<std::string> names;
  for (int c = 0; c < 150; ++c) names.push_back("class " + std::to_string(1000 + c));
  const fs::path src = d.path / "many", out = d.path / "p";
  write_class_folders(src, names, 7, 12);
  PrepareOptions o = options(folder_labeler({src.string()}), src, out, 12);
  o.near_threshold = -1;  // noise images of 12 px: the duplicate search is not what this tests
  json rep = prepare_dataset(o);
  EXPECT_EQ(rep["classes"].size(), 150u);
  const Manifest m = read_manifest((out / "manifest.csv").string());
  EXPECT_EQ(m.classes, names);  // sorted byte order = the folders' order here
  auto c = split_counts(m);
  for (const auto& n : names) {  // 7 images: 5 / 1 / 1 at 70/10/20
    EXPECT_EQ(c["train"][n], 5) << n;
    EXPECT_EQ(c["val"][n], 1) << n;
    EXPECT_EQ(c["test"][n], 1) << n;
  }
  EXPECT_TRUE(rep["small_classes"].empty());
}

TEST(DataLabels, ClassNamesInAnyUtf8SurviveEveryFile) {
  TempDir d("labels_utf8");
  const std::vector<std::string> names = {"chats noirs", "Éosinophile", "好猫", "a, \"quoted\" name"};
  const fs::path src = d.path / "utf8", out = d.path / "p";
  write_class_folders(src, names, 10);
  prepare_dataset(options(folder_labeler({src.string()}), src, out));
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  // Through manifest.csv (quoted fields) and classes.txt ...
  EXPECT_EQ(read_manifest((out / "manifest.csv").string()).classes, sorted);
  // ... and through report.json alone (a folder whose classes.txt was lost).
  fs::remove(out / "classes.txt");
  const Manifest m = read_manifest((out / "manifest.csv").string());
  EXPECT_EQ(m.classes, sorted);
  std::set<std::string> seen;
  for (const auto& s : m.samples) seen.insert(m.classes[size_t(s.label)]);
  EXPECT_EQ(seen.size(), 4u);
}

// Linux file names are bytes. A class folder named on a Latin-1 system cannot become a class name
// (JSON in report.json, the model, every report): refused, naming it, before any work. A file name
// in another encoding is only a path: kept, and report.json shows it with U+FFFD.
TEST(DataLabels, AClassFolderNamedInAnotherEncodingIsRefusedByNameAFileIsKept) {
  TempDir d("labels_latin1");
  const fs::path src = d.path / "pets", out = d.path / "p";
  write_class_folders(src, {"cats", "k\xe4tze"}, 10);
  const std::string e = error_of([&] { prepare_dataset(options(folder_labeler({src.string()}), src, out)); });
  EXPECT_NE(e.find("class name \"k\xef\xbf\xbdtze\" is not UTF-8 text"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(out / "manifest.csv"));

  const fs::path src2 = d.path / "pets2", out2 = d.path / "p2";
  write_class_folders(src2, {"cats", "dogs"}, 10);
  write_png((src2 / "cats" / "caf\xe9.png").string(), noise_image(16, 16, 4242, 90));
  std::ofstream(src2 / "dogs" / "b\xe2" "d.png") << "not an image";  // listed in report.json
  ASSERT_NO_THROW(prepare_dataset(options(folder_labeler({src2.string()}), src2, out2)));
  const std::vector<uint8_t> bytes = read_file_bytes((out2 / "report.json").string());
  const json rep = json::parse(bytes.begin(), bytes.end());  // a real parser: valid UTF-8 JSON
  EXPECT_NE(rep.dump().find("b\xef\xbf\xbd" "d.png"), std::string::npos);
  const Manifest m = read_manifest((out2 / "manifest.csv").string());
  EXPECT_EQ(m.samples.size(), 21u);
  EXPECT_TRUE(std::any_of(m.samples.begin(), m.samples.end(),
                          [](const Sample& s) { return s.path == "cats/caf\xe9.png"; }));  // the bytes kept
}

TEST(DataLabels, AFileNameWithALineBreakIsNamedAndLeftOut) {
  // manifest.csv is read a line at a time, so such a row would make the prepared set unreadable
  // by train and eval; prepare must name the file instead.
  TempDir d("labels_newline");
  const fs::path src = d.path / "pets", out = d.path / "p";
  write_class_folders(src, {"cats", "dogs"}, 10);
  const std::string odd = "cats/two\nlines.png";
  write_png((src / odd).string(), noise_image(16, 16, 999, 120));
  const json rep = prepare_dataset(options(folder_labeler({src.string()}), src, out));
  const Manifest m = read_manifest((out / "manifest.csv").string());
  EXPECT_EQ(m.samples.size(), 20u);
  ASSERT_EQ(rep["ignored"].size(), 1u);
  EXPECT_EQ(rep["ignored"][0]["path"], odd);
  EXPECT_NE(rep["ignored"][0]["reason"].get<std::string>().find("line break"), std::string::npos);
}

TEST(DataLabels, LinksThatLeadNowhereAreUnreadableNotFatal) {
  // A loop of links stopped the whole run ("filesystem error: status: Too many levels of symbolic
  // links") and a dangling link was left out without a word; a link to a file is an image like any.
  TempDir d("labels_links");
  const fs::path src = d.path / "pets", out = d.path / "p";
  write_class_folders(src, {"cats", "dogs"}, 10);
  fs::create_symlink("loopb.png", src / "cats" / "loopa.png");
  fs::create_symlink("loopa.png", src / "cats" / "loopb.png");
  fs::create_symlink(d.path / "gone.png", src / "dogs" / "dangling.png");
  fs::create_symlink("..", src / "dogs" / "up");  // a link to a folder is not followed
  const fs::path other = d.path / "elsewhere.png";
  write_png(other.string(), noise_image(16, 16, 77, 200));
  fs::create_symlink(other, src / "dogs" / "linked.png");
  const json rep = prepare_dataset(options(folder_labeler({src.string()}), src, out));
  std::map<std::string, std::string> why;
  for (const auto& u : rep["unreadable"]) why[u["path"]] = u["reason"];
  ASSERT_EQ(why.size(), 3u) << rep["unreadable"].dump();
  EXPECT_NE(why["cats/loopa.png"].find("cannot be followed"), std::string::npos) << why["cats/loopa.png"];
  EXPECT_NE(why["cats/loopb.png"].find("cannot be followed"), std::string::npos) << why["cats/loopb.png"];
  EXPECT_NE(why["dogs/dangling.png"].find("gone.png"), std::string::npos) << why["dogs/dangling.png"];
  const Manifest m = read_manifest((out / "manifest.csv").string());
  EXPECT_EQ(m.samples.size(), 21u);  // 2 x 10 and the linked file
  EXPECT_EQ(rep["files_scanned"], 24u);
}

TEST(DataLabels, AnOutputFolderInsideTheSourceIsNoClass) {
  // A second run with --out inside SRC saw the first run's topup/<class>/ images as a class named
  // after --out: a third class with no images, and a model with an output too many.
  TempDir d("labels_out_inside");
  const fs::path src = d.path / "pets", out = src / "prepared";
  write_class_folders(src, {"cats", "dogs"}, 6);
  PrepareOptions first = options(folder_labeler({src.string()}, absolute_path(out.string())), src, out);
  first.top_up = 8;
  prepare_dataset(first);
  ASSERT_TRUE(fs::exists(out / "topup"));
  const Labeler again = folder_labeler({src.string()}, absolute_path((out / ".").string()));
  EXPECT_EQ(again.classes, (std::vector<std::string>{"cats", "dogs"}));
  PrepareOptions second = options(again, src, out / ".");  // the same folder, spelt another way
  second.top_up = 8;
  EXPECT_EQ(prepare_dataset(second)["files_scanned"], 12u);
  // --out that is SRC, or holds it, would leave nothing to read: refused, naming both.
  for (const fs::path& o : {src, d.path}) {
    const std::string e = error_of([&] { prepare_dataset(options(folder_labeler({src.string()}), src, o)); });
    EXPECT_NE(e.find("--out '" + o.string() + "' is the SRC folder '" + src.string() + "'"), std::string::npos) << e;
  }
}

TEST(DataLabels, CsvSourceWithFixedSplitAndMissingFiles) {
  TempDir d("labels_csv");
  const fs::path src = d.path / "flat", out = d.path / "p";
  fs::create_directories(src);
  std::ofstream csv(d.path / "labels.csv");
  csv << "path,label,split\n";
  for (int i = 0; i < 40; ++i) {
    const std::string name = "f" + std::to_string(i) + ".png";
    write_png((src / name).string(), noise_image(16, 16, 100 + i, i < 20 ? 60 : 180));
    // The first four of each class are fixed to test, the rest left to prepare.
    csv << name << "," << (i < 20 ? "\"low, dark\"" : "high") << "," << ((i % 20) < 4 ? "test" : "") << "\n";
  }
  csv << "gone.png,high,\n";
  csv.close();
  json rep = prepare_dataset(options(csv_labeler((d.path / "labels.csv").string(), {src.string()}), src, out));
  EXPECT_EQ(rep["labels"], "csv");
  EXPECT_EQ(rep["classes"], json({"high", "low, dark"}));
  ASSERT_EQ(rep["labeler_warnings"].size(), 1u);
  EXPECT_NE(rep["labeler_warnings"][0].get<std::string>().find("gone.png"), std::string::npos);
  const Manifest m = read_manifest((out / "manifest.csv").string());
  int fixed_in_test = 0;
  for (const auto& s : m.samples) {
    const int i = std::stoi(s.path.substr(1));
    if (i % 20 < 4) {
      EXPECT_EQ(s.split, "test") << s.path;
      ++fixed_in_test;
    }
    EXPECT_EQ(m.classes[size_t(s.label)], i < 20 ? "low, dark" : "high");
  }
  EXPECT_EQ(fixed_in_test, 8);
  // The 16 free files per class are split by the percentages: 11 / 2 / 3.
  auto c = split_counts(m);
  EXPECT_EQ(c["train"]["high"], 11);
  EXPECT_EQ(c["val"]["high"], 2);
  EXPECT_EQ(c["test"]["high"], 3 + 4);
  // Malformed CSVs name the line.
  std::ofstream bad(d.path / "bad.csv");
  bad << "path,label,split\nf1.png,high,holdout\n";
  bad.close();
  std::string e = error_of([&] { csv_labeler((d.path / "bad.csv").string(), {src.string()}); });
  EXPECT_NE(e.find("bad.csv:2"), std::string::npos) << e;
  EXPECT_NE(e.find("holdout"), std::string::npos) << e;
  // A file listed twice with two splits (the last one won, without a word: a test image could
  // be trained on) stops the run like two labels do, naming the second line and both splits.
  std::ofstream twice(d.path / "twice.csv");
  twice << "path,label,split\nf1.png,high,train\nf2.png,high,\n./f1.png,high,test\n";
  twice.close();
  e = error_of([&] { csv_labeler((d.path / "twice.csv").string(), {src.string()}); });
  EXPECT_NE(e.find("twice.csv:4"), std::string::npos) << e;
  EXPECT_NE(e.find("'train'"), std::string::npos) << e;
  EXPECT_NE(e.find("'test'"), std::string::npos) << e;
}

// A hand-written CSV ("path, label") kept the spaces after its commas: "cat" and " cat" became two
// classes, and the header's " label" no column. Spaces and tabs around a field are dropped; a path
// whose file really begins or ends with a space is refused naming the line, since trimming it
// would name another file.
TEST(DataLabels, CsvSpacesAroundFieldsAreDropped) {
  TempDir d("labels_csv_spaces");
  const fs::path src = d.path / "flat";
  fs::create_directories(src);
  for (const char* f : {"f0.png", "f1.png", "f2.png", "f3.png"}) write_png((src / f).string(), noise_image(8, 8, 1, 90));
  std::ofstream(d.path / "spaced.csv") << "path, label , split\nf0.png,cat,train\nf1.png, cat ,\n f2.png\t,dog, test\n"
                                       << "f3.png,\"dog \",\n";
  const Labeler L = csv_labeler((d.path / "spaced.csv").string(), {src.string()});
  EXPECT_EQ(L.classes, (std::vector<std::string>{"cat", "dog"}));
  const std::vector<int> want = {0, 0, 1, 1};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(L.label_of("f" + std::to_string(i) + ".png"), want[size_t(i)]) << i;
  EXPECT_EQ(L.split_of("f2.png"), "test");
  EXPECT_TRUE(L.warnings.empty());
  write_png((src / " f4.png").string(), noise_image(8, 8, 2, 90));
  std::ofstream(d.path / "named.csv") << "path,label\nf0.png,cat\n f4.png,dog\n";
  const std::string e = error_of([&] { csv_labeler((d.path / "named.csv").string(), {src.string()}); });
  EXPECT_NE(e.find("named.csv:3"), std::string::npos) << e;
  EXPECT_NE(e.find("' f4.png'"), std::string::npos) << e;
}

TEST(DataLabels, ClassTooSmallToSplitIsKeptInTrainOrRefused) {
  TempDir d("labels_small");
  const fs::path src = d.path / "s";
  write_class_folders(src, {"big", "other"}, 20);
  write_class_folders(src, {"rare"}, 3, 16, 9000);
  json rep = prepare_dataset(options(folder_labeler({src.string()}), src, d.path / "p"));
  ASSERT_EQ(rep["small_classes"].size(), 1u);
  EXPECT_EQ(rep["small_classes"][0]["class"], "rare");
  EXPECT_EQ(rep["small_classes"][0]["count"], 3);
  EXPECT_EQ(rep["small_classes"][0]["action"], "train only");
  auto c = split_counts(read_manifest((d.path / "p" / "manifest.csv").string()));
  EXPECT_EQ(c["train"]["rare"], 3);
  EXPECT_EQ(c["val"].count("rare") + c["test"].count("rare"), 0u);
  EXPECT_GT(c["test"]["big"], 0);

  PrepareOptions o = options(folder_labeler({src.string()}), src, d.path / "q");
  o.small_classes = SmallClasses::kRefuse;
  const std::string e = error_of([&] { prepare_dataset(o); });
  EXPECT_NE(e.find("'rare' (3)"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(d.path / "q")) << "a refused prepare must not leave its --out behind";

  // A class of a fixed list with no image here (bccd's folders through the 14 cell classes) is said
  // so, not "0 usable images, too few for a 70/10/20 split: all go to train".
  Labeler L = folder_labeler({src.string()});
  L.classes.push_back("absent");
  PrepareOptions a = options(L, src, d.path / "a");
  std::string said;
  a.progress = [&](const std::string& s) { said += s + "\n"; };
  rep = prepare_dataset(a);
  EXPECT_NE(said.find("class 'absent' has no images here; it stays in the class list"), std::string::npos) << said;
  EXPECT_EQ(said.find("'absent' has 0 usable images"), std::string::npos) << said;
  EXPECT_EQ(rep["small_classes"][1]["action"], "no images");
}

TEST(DataLabels, ClassCountBounds) {
  TempDir d("labels_bounds");
  write_class_folders(d.path / "one", {"only"}, 5);
  std::string e = error_of([&] { folder_labeler({(d.path / "one").string()}); });
  EXPECT_NE(e.find("found 1 class ('only')"), std::string::npos) << e;
  EXPECT_NE(e.find("at least 2"), std::string::npos) << e;
  std::vector<std::string> many;
  for (int i = 0; i < kMaxClasses + 1; ++i) many.push_back("c" + std::to_string(i));
  e = error_of([&] { check_class_list(many, "x"); });
  EXPECT_NE(e.find("1001 classes; at most 1000"), std::string::npos) << e;
  EXPECT_EQ(error_of([&] { many.pop_back(), check_class_list(many, "x"); }), "");
  e = error_of([&] { check_class_list({"a", "b\nc"}, "x"); });
  EXPECT_NE(e.find("control character"), std::string::npos) << e;
}

TEST(DataLabels, CliAutoPicksFoldersOrTheCellTaxonomy) {
  TempDir d("labels_cli");
  write_class_folders(d.path / "pets", {"cats", "dogs"}, 12, 40);
  const std::string bin = VITENGINE_BINARY, log = (d.path / "log.txt").string();
  auto run = [&](const std::string& args) {
    return WEXITSTATUS(std::system((bin + " prepare " + args + " > " + log + " 2>&1").c_str()));
  };
  ASSERT_EQ(run((d.path / "pets").string() + " --out " + (d.path / "a").string()), 0);
  EXPECT_EQ(json::parse(std::ifstream(d.path / "a" / "report.json"))["labels"], "folders");
  ASSERT_EQ(run((fixtures() / "wbc").string() + " --out " + (d.path / "w").string() + " --min-side 8"), 0);
  json w = json::parse(std::ifstream(d.path / "w" / "report.json"));
  EXPECT_EQ(w["labels"], "wbc14");
  EXPECT_EQ(w["classes"].size(), 14u);
  // A bad --labels value is a usage error (exit 2) and leaves no --out behind.
  EXPECT_EQ(run((d.path / "pets").string() + " --out " + (d.path / "x").string() + " --labels imagenet"), 2);
  EXPECT_FALSE(fs::exists(d.path / "x"));
}

TEST(DataLabels, TopUpKeepsClassesWhoseFolderNamesWouldCollide) {
  TempDir d("labels_topup");
  const fs::path src = d.path / "t";
  write_class_folders(src, {"Cats", "cats", "好猫", "猫猫"}, 10);
  PrepareOptions o = options(folder_labeler({src.string()}), src, d.path / "p");
  o.top_up = 12;  // 7 train images per class -> 5 made per class
  json rep = prepare_dataset(o);
  const Manifest m = read_manifest((d.path / "p" / "manifest.csv").string());
  std::map<std::string, int> topup;
  std::set<std::string> paths;
  for (const auto& s : m.samples)
    if (s.path.rfind("topup/", 0) == 0) {
      ++topup[m.classes[size_t(s.label)]];
      EXPECT_TRUE(paths.insert(s.path).second) << "two top-up rows share " << s.path;
      EXPECT_TRUE(fs::exists(fs::path(s.src) / s.path)) << s.path;
    }
  for (const char* c : {"Cats", "cats", "好猫", "猫猫"}) EXPECT_EQ(topup[c], 5) << c;
}
