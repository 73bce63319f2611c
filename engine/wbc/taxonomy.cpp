// The taxonomy as data: one row per class, in model output order (sorted by name).
// Clinical notes were written from the sources named in each row and checked against
// them; they are short teaching notes for the demo, not diagnostic advice.
// Source keys (full references in docs/data.md, "Taxonomy sources"):
//   [Bain]      Bain BJ. Blood Cells: A Practical Guide, 6th ed. Wiley-Blackwell, 2021.
//   [Hoffbrand] Hoffbrand AV, Steensma DP. Hoffbrand's Essential Haematology, 8th ed. Wiley-Blackwell, 2019.
//   [ICSH]      Palmer L et al. ICSH recommendations for the standardization of nomenclature and grading of
//               peripheral blood cell morphological features. Int J Lab Hematol 2015;37:287-303.
//   [WHO5]      Khoury JD et al. The 5th edition of the WHO Classification of Haematolymphoid Tumours:
//               Myeloid and Histiocytic/Dendritic Neoplasms. Leukemia 2022;36:1703-1719.
#include "engine/wbc/taxonomy.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace vit {
namespace {

// Every field is plain text so the server and CLI can show it as is.
const std::vector<ClassInfo>& table() {
  static const std::vector<ClassInfo> t = {
      {"Band Neutrophil", "neutrophil",
       "A neutrophil one step short of full maturity: the nucleus is a curved band (C or U shape) of fairly even "
       "width, not yet divided into lobes joined by thin filaments.",
       "Increased (a 'left shift') in bacterial infection and sepsis, inflammation, tissue necrosis, pregnancy and "
       "after G-CSF therapy; normally only a small minority of circulating neutrophils.",
       "Observers disagree on where a band ends and a segmented cell begins, so band counts are poorly "
       "reproducible and many laboratories no longer report them separately.",
       "[Bain] ch. 3; [ICSH]; Cornbleet PJ. Clinical utility of the band count. Clin Lab Med 2002;22:101-136."},
      {"Basophil", "basophil",
       "The rarest granulocyte (usually under 1-2% of leucocytes), packed with large purple-black granules "
       "containing histamine and heparin that often hide the nucleus.",
       "Basophilia is a hallmark of chronic myeloid leukaemia and other myeloproliferative neoplasms; it is also "
       "seen in hypersensitivity reactions, hypothyroidism and ulcerative colitis.",
       "Basophils carry the high-affinity IgE receptor (FcERI); allergen cross-linking bound IgE makes them "
       "release histamine within minutes, part of immediate hypersensitivity.",
       "[Bain] ch. 3; [Hoffbrand] ch. 8; [WHO5] (basophilia in CML)."},
      {"Eosinophil", "eosinophil",
       "A granulocyte with a usually bilobed nucleus and large, uniform orange-red granules containing major basic "
       "protein and other cationic proteins.",
       "Raised in allergic disease (asthma, atopic dermatitis), helminth infection, drug reactions, some "
       "vasculitides (eosinophilic granulomatosis with polyangiitis), Hodgkin lymphoma and myeloid/lymphoid "
       "neoplasms with eosinophilia; lowered by corticosteroids and acute stress.",
       "Charcot-Leyden crystals, found in asthmatic sputum and in stools in parasitic infection, are made of "
       "galectin-10, a protein from eosinophil cytoplasm.",
       "[Bain] ch. 3; [Hoffbrand] ch. 8; Persson EK et al. Science 2019;364:eaaw4295 (galectin-10 crystals)."},
      {"Erythroblast", "erythroblast",
       "A nucleated red-cell precursor (nucleated red blood cell) with a round, dense nucleus; its cytoplasm turns "
       "from blue to pink as haemoglobin accumulates. Normally confined to the bone marrow after the newborn period.",
       "Normal in neonates. In adults: severe haemolysis or bleeding, hypoxia, thalassaemia major, marrow "
       "infiltration or myelofibrosis (a leucoerythroblastic film), after splenectomy and in critical illness, "
       "where it carries a poor prognosis.",
       "Analysers may count nucleated red cells as lymphocytes, so the white-cell count must be corrected when "
       "they are present.",
       "[Bain] ch. 3 and 8; [Hoffbrand] ch. 2."},
      {"Immature Granulocyte", "ig",
       "A granulocyte precursor (promyelocyte, myelocyte or metamyelocyte) whose exact stage was not recorded; "
       "analysers report these stages together as the immature granulocyte (IG) count.",
       "Raised in bacterial infection and sepsis, inflammation, tissue injury, pregnancy, G-CSF therapy, "
       "leucoerythroblastic states and myeloproliferative neoplasms; normally under about 1% of leucocytes.",
       "Modern haematology analysers measure the IG count automatically, and a raised IG% has been studied as an "
       "early marker of sepsis.",
       "[Bain] ch. 3; Ansari-Lari MA et al. Am J Clin Pathol 2003;120:795-799 (automated IG count)."},
      {"Lymphocyte", "lymphocyte",
       "A small round cell with a dense round nucleus and a thin rim of pale blue cytoplasm; larger forms have more "
       "cytoplasm and may have a few azurophilic granules. Includes B, T and NK cells.",
       "Lymphocytosis in viral infection (reactive lymphocytes in infectious mononucleosis), pertussis, chronic "
       "lymphocytic leukaemia and other lymphoproliferative disorders; lymphopenia in HIV infection, corticosteroid "
       "therapy and acute illness.",
       "B, T and NK cells look alike on a stained film; telling them apart needs immunophenotyping by flow "
       "cytometry.",
       "[Bain] ch. 3; [Hoffbrand] ch. 9."},
      {"Metamyelocyte", "ig",
       "A granulocyte precursor after the myelocyte: the nucleus is indented (kidney-shaped) by less than half its "
       "width, and the cytoplasm holds specific granules.",
       "Normally absent from blood. Appears with a left shift in infection or inflammation, after G-CSF, in "
       "leucoerythroblastic films and in myeloproliferative neoplasms such as chronic myeloid leukaemia.",
       "It is the first stage of the granulocyte line that can no longer divide; from here on, cells only mature.",
       "[Bain] ch. 3; [Hoffbrand] ch. 8; [ICSH]."},
      {"Monocyte", "monocyte",
       "The largest normal leucocyte, with a folded or kidney-shaped nucleus, lacy chromatin and abundant "
       "grey-blue cytoplasm that may hold fine granules and vacuoles.",
       "Monocytosis in chronic infection (tuberculosis, endocarditis), recovery from neutropenia, inflammatory "
       "disease, and chronic myelomonocytic or acute monocytic leukaemias (a persistent monocytosis is required "
       "for chronic myelomonocytic leukaemia).",
       "After a day or so in the blood, monocytes migrate into tissues and become macrophages or dendritic cells.",
       "[Bain] ch. 3; [Hoffbrand] ch. 8; [WHO5] (CMML criteria)."},
      {"Myeloblast", "blast",
       "The earliest recognisable granulocyte precursor: a large cell with a high nucleus-to-cytoplasm ratio, fine "
       "open chromatin, nucleoli and scanty basophilic cytoplasm with few or no granules.",
       "Not present in normal blood. Circulating blasts suggest acute myeloid leukaemia, a myelodysplastic "
       "neoplasm, blast transformation of a myeloproliferative neoplasm, or a leucoerythroblastic reaction. 20% "
       "blasts in blood or marrow is the classic threshold for acute myeloid leukaemia; lower or no thresholds apply "
       "to genetically defined types in the 2022 classifications.",
       "Auer rods, needle-shaped fusions of primary granules, occur only in neoplastic myeloid cells, so finding "
       "one in a blast points to a myeloid leukaemia.",
       "[Bain] ch. 3 and 9; [WHO5]; Matek C et al. Nat Mach Intell 2019;1:538-544 (source of these images)."},
      {"Myelocyte", "ig",
       "A granulocyte precursor with a round or oval, often eccentric nucleus without nucleoli and cytoplasm "
       "holding specific (secondary) granules; neutrophil, eosinophil and basophil myelocytes exist.",
       "Normally absent from blood. Seen in a left shift (severe infection, G-CSF, pregnancy), leucoerythroblastic "
       "films, and in large numbers in chronic myeloid leukaemia, where myelocytes and segmented neutrophils "
       "form the two peaks of the differential count.",
       "The myelocyte is the last stage of the granulocyte line that can still divide.",
       "[Bain] ch. 3 and 9; [Hoffbrand] ch. 8 and 15."},
      {"Neutrophil", "neutrophil",
       "A neutrophil granulocyte whose stage (band or segmented) was not recorded: pale pink cytoplasm with fine "
       "lilac granules and a condensed band-shaped or lobed nucleus.",
       "Neutrophilia in bacterial infection, inflammation, tissue necrosis, corticosteroid therapy, smoking, "
       "pregnancy and myeloproliferative neoplasms; neutropenia from drugs and chemotherapy, viral infection, "
       "autoimmunity, marrow failure, or benign ethnic neutropenia (Duffy-null phenotype).",
       "Neutrophils are the most numerous leucocytes in adult blood (roughly 40-75%) yet circulate for only "
       "hours before moving into the tissues.",
       "[Bain] ch. 3; [Hoffbrand] ch. 8."},
      {"Platelet", "platelet",
       "A small anucleate cell fragment (about 2-3 micrometres) shed by bone-marrow megakaryocytes, with purple "
       "granules in pale cytoplasm; essential for haemostasis.",
       "Thrombocytosis: reactive (iron deficiency, infection, inflammation, after splenectomy) or from essential "
       "thrombocythaemia and other myeloproliferative neoplasms. Thrombocytopenia: immune thrombocytopenia, "
       "disseminated intravascular coagulation, marrow failure, hypersplenism. EDTA-induced clumping gives a "
       "falsely low analyser count.",
       "A platelet circulates for about 7-10 days, and one megakaryocyte releases thousands of them.",
       "[Bain] ch. 3 and 10; [Hoffbrand] ch. 24-25."},
      {"Promyelocyte", "ig",
       "A granulocyte precursor larger than a myeloblast, with a round or oval nucleus, often a nucleolus, a pale "
       "Golgi zone beside the nucleus and many purple azurophilic (primary) granules.",
       "Normally absent from blood. Seen in a left shift, recovery from chemotherapy or G-CSF, leucoerythroblastic "
       "films and chronic myeloid leukaemia; abnormal hypergranular promyelocytes, some with bundles of Auer rods "
       "('faggot cells'), define acute promyelocytic leukaemia.",
       "Acute promyelocytic leukaemia (PML::RARA) is an emergency because of bleeding, yet with all-trans "
       "retinoic acid and arsenic trioxide it has become one of the most curable leukaemias.",
       "[Bain] ch. 3 and 9; [WHO5]; Lo-Coco F et al. N Engl J Med 2013;369:111-121."},
      {"Segmented Neutrophil", "neutrophil",
       "A mature neutrophil whose nucleus has 2-5 lobes joined by thin chromatin filaments, in pale cytoplasm with "
       "fine granules.",
       "Neutrophilia in bacterial infection, inflammation, stress and corticosteroid therapy; neutropenia in drug "
       "reactions, viral infection, autoimmunity and marrow failure. Hypersegmentation (6 or more lobes) suggests "
       "vitamin B12 or folate deficiency; hyposegmented (Pelger-Huet) nuclei are inherited or myelodysplastic.",
       "In women a few neutrophils carry a small 'drumstick' nuclear appendage: the inactive X chromosome.",
       "[Bain] ch. 3; [Hoffbrand] ch. 5 and 8; [ICSH]."},
  };
  return t;
}

// File-name prefix -> class name. IG and NEUTROPHIL are labels at a coarser level
// (stage not given) and map to their own classes, not to a guessed stage.
struct Prefix {
  const char* prefix;
  const char* cls;
};
const Prefix kPrefixes[] = {
    {"BNE", "Band Neutrophil"},
    {"SNE", "Segmented Neutrophil"},
    {"NGS", "Segmented Neutrophil"},
    {"NEUTROPHIL", "Neutrophil"},
    {"BA", "Basophil"},
    {"EO", "Eosinophil"},
    {"LY", "Lymphocyte"},
    {"MO", "Monocyte"},
    {"ERB", "Erythroblast"},
    {"PLATELET", "Platelet"},
    {"IG", "Immature Granulocyte"},
    {"PMY", "Promyelocyte"},
    {"MY", "Myelocyte"},
    {"MMY", "Metamyelocyte"},
    {"MYO", "Myeloblast"},
};

// Folder names seen in the wild that are neither a class name, group nor prefix.
const Prefix kFolderAliases[] = {
    {"band", "Band Neutrophil"},   {"seg", "Segmented Neutrophil"}, {"segmented", "Segmented Neutrophil"},
    {"blast", "Myeloblast"},       {"myeloblasts", "Myeloblast"},   {"platelets", "Platelet"},
    {"thrombocyte", "Platelet"},   {"nrbc", "Erythroblast"},        {"erythroblasts", "Erythroblast"},
    {"lymphocytes", "Lymphocyte"}, {"monocytes", "Monocyte"},       {"eosinophils", "Eosinophil"},
    {"basophils", "Basophil"},     {"neutrophils", "Neutrophil"},
};

std::string lower(std::string s) {
  for (auto& ch : s) ch = (char)std::tolower((unsigned char)ch);
  return s;
}
std::string upper(std::string s) {
  for (auto& ch : s) ch = (char)std::toupper((unsigned char)ch);
  return s;
}

}  // namespace

const std::vector<ClassInfo>& classes() { return table(); }

const std::vector<std::string>& groups() {
  static const std::vector<std::string> g = [] {
    std::vector<std::string> v;
    for (const auto& c : table())
      if (std::find(v.begin(), v.end(), c.group) == v.end()) v.push_back(c.group);
    std::sort(v.begin(), v.end());
    return v;
  }();
  return g;
}

int num_classes() { return (int)table().size(); }

int class_index(const std::string& name) {
  const auto& t = table();
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i].name == name) return (int)i;
  return -1;
}

int group_of(int c) {
  if (c < 0 || c >= num_classes()) throw std::out_of_range("group_of: class index " + std::to_string(c));
  const auto& g = groups();
  return (int)(std::find(g.begin(), g.end(), table()[c].group) - g.begin());
}

int class_from_filename(const std::string& filename) {
  // Strip any directory part, then take the text before the first '_'.
  std::string base = filename.substr(filename.find_last_of("/\\") + 1);
  size_t us = base.find('_');
  if (us == std::string::npos || us == 0) return -1;
  std::string p = upper(base.substr(0, us));
  for (const auto& e : kPrefixes)
    if (p == e.prefix) return class_index(e.cls);
  return -1;
}

int class_from_folder(const std::string& folder) {
  std::string f = lower(folder);
  while (!f.empty() && (f.back() == '/' || f.back() == '\\')) f.pop_back();
  f = f.substr(f.find_last_of("/\\") + 1);
  if (f.empty()) return -1;
  const auto& t = table();
  for (size_t i = 0; i < t.size(); ++i)
    if (lower(t[i].name) == f) return (int)i;
  for (const auto& e : kPrefixes)
    if (lower(e.prefix) == f) return class_index(e.cls);
  for (const auto& e : kFolderAliases)
    if (f == e.prefix) return class_index(e.cls);
  // A group name maps to the class that stands for "this group, stage not given";
  // a group with several classes and no such class (blast) maps to its only member.
  static const Prefix kGroups[] = {
      {"neutrophil", "Neutrophil"},     {"eosinophil", "Eosinophil"}, {"basophil", "Basophil"},
      {"lymphocyte", "Lymphocyte"},     {"monocyte", "Monocyte"},     {"ig", "Immature Granulocyte"},
      {"erythroblast", "Erythroblast"}, {"platelet", "Platelet"},     {"blast", "Myeloblast"}};
  for (const auto& e : kGroups)
    if (f == e.prefix) return class_index(e.cls);
  return -1;
}

}  // namespace vit
