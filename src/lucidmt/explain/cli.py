"""`lucidmt explain RUN "sentence"`: translation, alignment, attributions and confidence, as HTML + JSON + PNG."""

from __future__ import annotations

import sys


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="explain one translation: attention, alignment, attributions, confidence (HTML, JSON, PNG)",
        description="Translate a sentence (or force a given translation with --target) and write OUT.html, "
        "OUT.json and OUT.png: cross-attention per layer and head, a Pharaoh word alignment, integrated-gradients "
        "and ALTI+ source attributions, and per-token probability and entropy with low-confidence tokens flagged.",
    )
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint folder")
    p.add_argument("sentence", help="the source sentence")
    p.add_argument("--target", help="explain this translation instead of the model's own")
    p.add_argument("--out", default="explain", help="output path without extension (default: ./explain)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--length-penalty", type=float, default=0.6)
    p.add_argument("--ig-steps", type=int, default=64, help="integration steps of integrated gradients")
    p.add_argument(
        "--methods",
        default="integrated_gradients,alti",
        help="comma-separated attributions to compute: integrated_gradients, alti (empty: none)",
    )
    p.add_argument("--low-confidence", type=float, default=0.5, help="flag tokens with probability below this")
    p.add_argument("--alignment-layer", type=int, help="align with this decoder layer's attention (default: mean)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="also print the JSON document to stdout")
    p.set_defaults(func=cmd_explain)


def cmd_explain(a) -> int:
    import json

    from ..decode.translator import Translator
    from .render import write_report

    tr = Translator.load(a.run, device=a.device)
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    ex = tr.explain(
        a.sentence,
        target=a.target,
        beam_size=a.beam,
        ig_steps=a.ig_steps,
        methods=methods,
        low_confidence=a.low_confidence,
        alignment_layer=a.alignment_layer,
        length_penalty=a.length_penalty,
    )
    paths = write_report(ex, a.out)
    if a.json:
        print(json.dumps(ex.to_dict(), ensure_ascii=False))
        return 0
    print(ex.translation)
    print(f"alignment: {ex.pharaoh}")
    for name, links in ex.alignments().items():
        if name != "attention":
            print(f"alignment ({name}): {links}")
    low = ex.low_confidence_words()
    print(f"low-confidence words (p < {ex.low_confidence_threshold}): {' '.join(low) if low else 'none'}")
    if ex.alti is not None:
        print(f"ALTI+ source share (mean over tokens): {float(ex.alti.sum(1).mean()):.3f}")
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
