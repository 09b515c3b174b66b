"""The pieces of a submission: tracks and revisions, the official item counts, the task table."""

from __future__ import annotations

from dataclasses import dataclass

from ..words import MILESTONES_M, milestone_name

BACKENDS = ("causal", "mntp")
TRACKS = {
    "strict-small": [milestone_name(m) for m in MILESTONES_M if m <= 100],
    "strict": [milestone_name(m) for m in MILESTONES_M],
}
GROUPS = ("fast", "full", "aoa", "finetune")
MAIN = "main"

# Item counts the official collation checks (collate_preds.py); each equals the number of lines
# of the BabyLM 2025 evaluation file (tests/test_submission.py checks them against ../shared/data).
BLIMP_SIZES = {
    "adjunct_island": 928, "anaphor_gender_agreement": 971, "anaphor_number_agreement": 931,
    "animate_subject_passive": 895, "animate_subject_trans": 923, "causative": 818, "complex_NP_island": 846,
    "coordinate_structure_constraint_complex_left_branch": 906,
    "coordinate_structure_constraint_object_extraction": 949, "determiner_noun_agreement_1": 929,
    "determiner_noun_agreement_2": 931, "determiner_noun_agreement_irregular_1": 681,
    "determiner_noun_agreement_irregular_2": 820, "determiner_noun_agreement_with_adj_2": 941,
    "determiner_noun_agreement_with_adj_irregular_1": 718, "determiner_noun_agreement_with_adj_irregular_2": 840,
    "determiner_noun_agreement_with_adjective_1": 933, "distractor_agreement_relational_noun": 788,
    "distractor_agreement_relative_clause": 871, "drop_argument": 920, "ellipsis_n_bar_1": 802,
    "ellipsis_n_bar_2": 828, "existential_there_object_raising": 812, "existential_there_quantifiers_1": 930,
    "existential_there_quantifiers_2": 911, "existential_there_subject_raising": 924,
    "expletive_it_object_raising": 759, "inchoative": 855, "intransitive": 868,
    "irregular_past_participle_adjectives": 961, "irregular_past_participle_verbs": 942,
    "irregular_plural_subject_verb_agreement_1": 804, "irregular_plural_subject_verb_agreement_2": 892,
    "left_branch_island_echo_question": 947, "left_branch_island_simple_question": 951,
    "matrix_question_npi_licensor_present": 929, "npi_present_1": 909, "npi_present_2": 914,
    "only_npi_licensor_present": 882, "only_npi_scope": 837, "passive_1": 840, "passive_2": 903,
    "principle_A_c_command": 946, "principle_A_case_1": 912, "principle_A_case_2": 915, "principle_A_domain_1": 914,
    "principle_A_domain_2": 915, "principle_A_domain_3": 941, "principle_A_reconstruction": 967,
    "regular_plural_subject_verb_agreement_1": 890, "regular_plural_subject_verb_agreement_2": 945,
    "sentential_negation_npi_licensor_present": 919, "sentential_negation_npi_scope": 871,
    "sentential_subject_island": 961, "superlative_quantifiers_1": 979, "superlative_quantifiers_2": 986,
    "tough_vs_raising_1": 948, "tough_vs_raising_2": 920, "transitive": 868, "wh_island": 960,
    "wh_questions_object_gap": 859, "wh_questions_subject_gap": 898, "wh_questions_subject_gap_long_distance": 857,
    "wh_vs_that_no_gap": 861, "wh_vs_that_no_gap_long_distance": 875, "wh_vs_that_with_gap": 919,
    "wh_vs_that_with_gap_long_distance": 910,
}
SUPPLEMENT_SIZES = {"hypernym": 842, "qa_congruence_easy": 64, "qa_congruence_tricky": 165,
                    "subject_aux_inversion": 3867, "turn_taking": 280}
EWOK_SIZES = {"agent-properties": 2210, "material-dynamics": 770, "material-properties": 170,
              "physical-dynamics": 120, "physical-interactions": 556, "physical-relations": 818,
              "quantitative-properties": 314, "social-interactions": 294, "social-properties": 328,
              "social-relations": 1548, "spatial-relations": 490}
ET_SIZES = {f"{f}_{k}_ops": n for f, ns in (("regular", (606, 607, 606, 606, 568, 159)),
                                            ("ambiref", (607, 607, 604, 604, 615, 187)),
                                            ("move_contents", (605, 606, 605, 606, 529, 156)))
            for k, n in enumerate(ns)}
COMPS_SIZES = {"base": 49340, "wugs": 13896, "wugs_dist_before": 13896, "wugs_dist_in_between": 13896}
GLUE_SIZES = {"boolq": 1635, "mnli": 4908, "mrpc": 204, "multirc": 2424, "qqp": 20215, "rte": 139, "wsc": 52}
READING_SIZE = 1726
WUG_SIZES = {"wug_adj": 200, "wug_past": 50}
AOA_SIZE = 8005
FAST_SIZES = {"blimp_fast": 200, "supplement_fast": 50, "ewok_fast": 100}


@dataclass(frozen=True)
class TaskSpec:
    """One kind of piece: where collate_preds reads it and what it must hold."""

    name: str  # ours: blimp_fast, ..., aoa, boolq
    group: str  # fast, full, aoa or finetune
    rel: str  # below results/<model>/<revision>/ ("{b}" = backend)
    key: str  # its key in the collated JSON (fast: in fast_eval_results)
    sizes: dict[str, int]  # items per top-level key (AoA: records per revision)
    fields: tuple[str, ...] = ("id", "pred")  # what every prediction needs

    def path(self, backend: str) -> str:
        return self.rel.format(b=backend)


def _zs(rel: str) -> str:
    return "zero_shot/{b}/" + rel


FAST_TASKS = [
    TaskSpec("blimp_fast", "fast", _zs("blimp/blimp_fast/predictions.json"), "blimp",
             {k: 200 for k in BLIMP_SIZES}),
    TaskSpec("supplement_fast", "fast", _zs("blimp/supplement_fast/predictions.json"), "blimp_supplement",
             {k: 50 for k in SUPPLEMENT_SIZES}),
    TaskSpec("ewok_fast", "fast", _zs("ewok/ewok_fast/predictions.json"), "ewok", {k: 100 for k in EWOK_SIZES}),
    TaskSpec("entity_tracking_fast", "fast", _zs("entity_tracking/entity_tracking_fast/predictions.json"),
             "entity_tracking", {k: v for k, v in ET_SIZES.items() if k.startswith("regular_")}),
    TaskSpec("wug_adj", "fast", _zs("wug_adj/wug_adj_nominalization/predictions.json"), "wug_adj",
             {"wug_adj": WUG_SIZES["wug_adj"]}, ("id", "pred", "prob")),
    TaskSpec("wug_past", "fast", _zs("wug_past/wug_past_tense/predictions.json"), "wug_past",
             {"wug_past": WUG_SIZES["wug_past"]}, ("id", "pred", "prob")),
    TaskSpec("reading", "fast", _zs("reading/predictions.json"), "reading", {"reading": READING_SIZE},
             ("id", "pred", "prev_pred")),
]
FULL_TASKS = [
    TaskSpec("blimp_filtered", "full", _zs("blimp/blimp_filtered/predictions.json"), "blimp", BLIMP_SIZES),
    TaskSpec("supplement_filtered", "full", _zs("blimp/supplement_filtered/predictions.json"), "blimp_supplement",
             SUPPLEMENT_SIZES),
    TaskSpec("ewok_filtered", "full", _zs("ewok/ewok_filtered/predictions.json"), "ewok", EWOK_SIZES),
    TaskSpec("entity_tracking", "full", _zs("entity_tracking/entity_tracking/predictions.json"), "entity_tracking",
             ET_SIZES),
    TaskSpec("wug_adj", "full", _zs("wug_adj/wug_adj_nominalization/predictions.json"), "wug_adj",
             {"wug_adj": WUG_SIZES["wug_adj"]}, ("id", "pred", "prob")),
    TaskSpec("wug_past", "full", _zs("wug_past/wug_past_tense/predictions.json"), "wug_past",
             {"wug_past": WUG_SIZES["wug_past"]}, ("id", "pred", "prob")),
    TaskSpec("comps", "full", _zs("comps/comps/predictions.json"), "comps", COMPS_SIZES),
    TaskSpec("reading", "full", _zs("reading/predictions.json"), "reading", {"reading": READING_SIZE},
             ("id", "pred", "prev_pred")),
]
AOA_TASK = TaskSpec("aoa", "aoa", _zs("AoA_word/surprisal.json"), "aoa", {})
FINETUNE_TASKS = [TaskSpec(t, "finetune", f"finetune/{t}/predictions.json", t, {t: n}) for t, n in GLUE_SIZES.items()]
ALL_TASK_NAMES = list(dict.fromkeys(t.name for t in [*FAST_TASKS, *FULL_TASKS, AOA_TASK, *FINETUNE_TASKS]))
PAIR_TASKS = {"blimp_fast", "supplement_fast", "ewok_fast", "blimp_filtered", "supplement_filtered", "ewok_filtered"}
FULL_ORDER = ("blimp", "blimp_supplement", "ewok", "entity_tracking", "wug_adj", "wug_past", "comps", "reading", "aoa")
FAST_ORDER = ("blimp", "blimp_supplement", "ewok", "entity_tracking", "wug_adj", "wug_past", "reading")


def revision_words(revision: str) -> int:
    """chck_20M -> 20_000_000."""
    return int(revision[len("chck_"):-1]) * 1_000_000
