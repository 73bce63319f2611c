// Smear-level differential from per-cell predictions: counts and percentages per
// class, the 5-part differential, rule-based flags (each with its rule written out),
// low-confidence cells for review, as JSON and as a self-contained HTML page.
//
// Denominator: every white cell counted (the neutrophil, lymphocyte, monocyte,
// eosinophil, basophil, immature-granulocyte and blast groups). Platelets and
// erythroblasts are not white cells; erythroblasts are reported per 100 WBC, as in a
// manual count. The 5 parts plus IG plus blasts sum to 100% of WBCs.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vit {

// Thresholds of the flags. Relative (%) counts only: the absolute-count definitions
// (e.g. eosinophils > 0.5 x 10^9/L) need a total WBC count this tool does not have.
struct DifferentialRules {
  float ig_pct_wbc = 2.0f;             // left shift: IG (promyelo + myelo + metamyelo + IG) > this % of WBCs
  float band_pct_neutrophils = 10.0f;  // bands > this % of all neutrophils
  float eos_pct_wbc = 6.0f;            // eosinophilia: eosinophils > this % of WBCs
  float baso_pct_wbc = 2.0f;           // basophilia: basophils > this % of WBCs
  int blast_min = 1;                   // any blast (>= this many) is flagged
  int erythroblast_min = 1;            // any erythroblast (nRBC) is flagged
  float review_below = 0.5f;           // cells whose top probability is below this go to review
};

// One classified cell.
struct CellCall {
  std::string name;            // file name or upload name, shown to the reader
  std::vector<float> probs;    // calibrated, in `class_names` order
  std::string thumb_jpeg_b64;  // optional thumbnail for the review list
};

// Builds the report. class_names is the model's output order; names are mapped to
// the taxonomy's groups (throws std::runtime_error on a name the taxonomy lacks).
nlohmann::json differential(const std::vector<CellCall>& cells, const std::vector<std::string>& class_names,
                            const DifferentialRules& rules = {});

// Self-contained HTML (no external resources) for a differential() result; `title`
// names the smear (e.g. the folder).
std::string differential_html(const nlohmann::json& report, const std::string& title);

// Escapes &, <, >, " and ' for HTML text and attributes.
std::string html_escape(const std::string& s);

}  // namespace vit
