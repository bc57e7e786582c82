"""Auditing a model and a corpus: scores by slice with confidence intervals, robustness, hallucinations, gender.

from lucidmt.audit import audit_model, write_audit, run_probe, classify, audit_corpus
"""

from .corpus import audit_corpus
from .gender import classify, gender_scores, judge, probe_items, run_probe
from .metrics import bleu_from_stats, chrf_from_stats, paired_drop, score_subset, sentence_stats
from .model import audit_model
from .render import audit_html, corpus_html, write_audit, write_corpus_audit
from .slices import standard_slices, word_counts

__all__ = [
    "audit_corpus",
    "audit_html",
    "audit_model",
    "bleu_from_stats",
    "chrf_from_stats",
    "classify",
    "corpus_html",
    "gender_scores",
    "judge",
    "paired_drop",
    "probe_items",
    "run_probe",
    "score_subset",
    "sentence_stats",
    "standard_slices",
    "word_counts",
    "write_audit",
    "write_corpus_audit",
]
