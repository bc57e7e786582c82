"""`lucidmt export` and `lucidmt import-hf`: thin wrappers over `interop.ctranslate2` and `interop.huggingface`."""

from __future__ import annotations

QUANTIZATION_CHOICES = ("int8", "int8_float32", "int16", "float16", "bfloat16", "float32")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to CTranslate2 or Hugging Face Transformers",
        description="Write RUN's checkpoint as a CTranslate2 model folder or as a Hugging Face folder "
        "(MarianMTModel for post-norm models, PegasusForConditionalGeneration for pre-norm ones), with its "
        "tokenizer. The converted model is validated before anything is written.",
    )
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint folder")
    p.add_argument("--to", required=True, choices=["ctranslate2", "huggingface"], dest="to")
    p.add_argument("out", help="output folder (replaced atomically)")
    p.add_argument(
        "--quantization",
        choices=QUANTIZATION_CHOICES,
        help="ctranslate2: store the weights in this type (default: float32)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import-hf",
        help="convert a local Hugging Face MarianMTModel folder (e.g. opus-mt) into a lucidmt run folder",
        description="Convert HF_DIR (config.json, model.safetensors or pytorch_model.bin, source.spm, target.spm, "
        "vocab.json) into a run folder OUT (checkpoint in OUT/best/) that translate, evaluate, serve and explain "
        "accept. The converted model must reproduce the original's logits before anything is written.",
    )
    p.add_argument("hf_dir", help="local folder of a MarianMTModel (no hub access)")
    p.add_argument("out", help="output run folder")
    p.add_argument("--src-lang", help="source language code (default: from tokenizer_config.json)")
    p.add_argument("--tgt-lang", help="target language code (default: from tokenizer_config.json)")
    p.add_argument("--no-verify", action="store_true", help="skip the logit comparison with the original model")
    p.set_defaults(func=cmd_import_hf)


def cmd_export(a) -> int:
    from ..errors import ConfigurationError

    if a.to == "ctranslate2":
        from .ctranslate2 import export_ctranslate2

        out = export_ctranslate2(a.run, a.out, a.quantization)
    else:
        if a.quantization:
            raise ConfigurationError("--quantization applies to --to ctranslate2 only")
        from .huggingface import export_huggingface

        out = export_huggingface(a.run, a.out)
    print(f"exported {a.run} to {a.to} in {out}")
    return 0


def cmd_import_hf(a) -> int:
    from .huggingface import import_marian

    out = import_marian(a.hf_dir, a.out, a.src_lang, a.tgt_lang, verify=not a.no_verify)
    print(f"imported {a.hf_dir} into {out} (checkpoint {out / 'best'})")
    return 0
