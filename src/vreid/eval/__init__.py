"""Retrieval metrics (CMC, mAP, mINP, CGM), verification (ROC) and benchmark protocols, computed in query blocks."""
from vreid.eval.distance import FeatureDistances, FunctionDistances, MatrixDistances
from vreid.eval.metrics import (
    JUNK_RULES, EvalResult, cgm_from_ranked_list, evaluate_distances, evaluate_distmat, evaluate_features,
    rank_positives,
)
from vreid.eval.protocols import (
    PROTOCOLS, VEHICLEID_SEEDS, distance_source, evaluate, evaluate_protocol, vehicleid_gallery_draw,
)
from vreid.eval.ranking import ranked_topk
from vreid.eval.report import describe, format_table, save_result
from vreid.eval.selection import EVAL_METRICS
from vreid.eval.verification import VerificationResult, count_pairs, verify_distances
