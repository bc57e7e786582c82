"""Bridges to other inference and model ecosystems.

    ctranslate2.py   export a checkpoint to a CTranslate2 model folder; `CT2Engine` decodes with it
    huggingface.py   Hugging Face MarianMTModel (opus-mt) import, and export to MarianMTModel / Pegasus

Each module imports its optional dependency (`ctranslate2`, `transformers`) only when called.
"""
