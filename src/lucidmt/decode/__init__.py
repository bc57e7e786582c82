"""Search (greedy, beam, sampling) and the Translator API."""

from .search import DecodeOptions
from .translator import Hypothesis, Translation, Translator

__all__ = ["DecodeOptions", "Hypothesis", "Translation", "Translator"]
