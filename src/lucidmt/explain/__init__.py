"""Explaining translations: cross-attention, word alignments, source attributions, token confidence.

ex = lucidmt.Translator.load("work/run").explain("A dog runs.")
ex.pharaoh, ex.low_confidence_words(), ex.to_dict()
lucidmt.explain.write_report(ex, "work/explain/dog")     # .png, .html, .json
"""

from .alignment import align, hypothesis_alignment, parse_pharaoh, pharaoh, translation_alignment
from .attribution import AltiResult, IGResult, alti_plus, integrated_gradients
from .explainer import Explanation, explain
from .render import html_page, write_report
from .words import Words, group_pieces, pool

__all__ = [
    "AltiResult",
    "Explanation",
    "IGResult",
    "Words",
    "align",
    "alti_plus",
    "explain",
    "group_pieces",
    "html_page",
    "hypothesis_alignment",
    "integrated_gradients",
    "parse_pharaoh",
    "pharaoh",
    "pool",
    "translation_alignment",
    "write_report",
]
