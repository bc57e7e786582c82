"""`lucidmt <verb>`: parse arguments, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import LucidError

# ---------------------------------------------------------------------------------------------------------------
# prepare


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="clean parallel text, train SentencePiece, cache token ids",
        description="Build a prepared-data folder from a named dataset, two aligned files, or a TSV file.",
    )
    src = p.add_argument_group("input (one of)")
    src.add_argument("--dataset", help="a named dataset: multi30k, tatoeba-zh-en")
    src.add_argument("--train-src", help="training source file (plain or .gz, one sentence per line)")
    src.add_argument("--train-tgt", help="training target file")
    src.add_argument("--train-tsv", help="training pairs as src<TAB>tgt lines")
    p.add_argument("--valid-src")
    p.add_argument("--valid-tgt")
    p.add_argument("--valid-tsv")
    p.add_argument("--valid-size", type=int, default=1000, help="pairs held out for validation when none is given")
    p.add_argument("--src", required=True, help="source language code (e.g. en)")
    p.add_argument("--tgt", required=True, help="target language code (e.g. de)")
    p.add_argument("--data-dir", help="folder with the named datasets (default: $LUCIDMT_DATA or ../shared/data)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe", help="unigram allows subword sampling")
    p.add_argument("--separate-vocab", action="store_true", help="one SentencePiece model per side")
    p.add_argument("--character-coverage", type=float, help="default: 1.0, or 0.9995 with Chinese/Japanese/Korean")
    p.add_argument("--max-chars", type=int, default=1000, help="drop pairs with a side longer than this")
    p.add_argument("--max-len", type=int, default=250, help="drop pairs with a side longer than this, in subwords")
    p.add_argument("--max-ratio", type=float, default=3.0, help="drop pairs whose subword length ratio exceeds this")
    p.add_argument("--dedup", action="store_true", help="drop repeated (source, target) pairs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--tokenizer",
        help="reuse the tokenizer of this run, checkpoint or prepared folder (to fine-tune that model) "
        "instead of training SentencePiece",
    )
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(a) -> int:
    from .data.corpus import load_dataset, read_parallel, read_tsv
    from .data.prepare import PrepareOptions, holdout, prepare
    from .errors import DataError

    if a.dataset:
        train = load_dataset(a.dataset, "train", a.src, a.tgt, a.data_dir)
        valid = load_dataset(a.dataset, "valid", a.src, a.tgt, a.data_dir)
    elif a.train_src or a.train_tgt:
        if not (a.train_src and a.train_tgt):
            raise DataError("--train-src and --train-tgt go together")
        train = read_parallel(a.train_src, a.train_tgt)
        valid = None
    elif a.train_tsv:
        train = read_tsv(a.train_tsv)
        valid = None
    else:
        raise DataError("give --dataset, --train-src/--train-tgt, or --train-tsv")
    if valid is None:
        if a.valid_src or a.valid_tgt:
            if not (a.valid_src and a.valid_tgt):
                raise DataError("--valid-src and --valid-tgt go together")
            valid = read_parallel(a.valid_src, a.valid_tgt)
        elif a.valid_tsv:
            valid = read_tsv(a.valid_tsv)
        else:
            train, valid = holdout(train, a.valid_size, a.seed)
            print(f"no validation set given: held out {len(valid)} random training pairs", file=sys.stderr)
    opts = PrepareOptions(
        src_lang=a.src,
        tgt_lang=a.tgt,
        vocab_size=a.vocab_size,
        model_type=a.model_type,
        joint=not a.separate_vocab,
        character_coverage=a.character_coverage,
        max_chars=a.max_chars,
        max_len=a.max_len,
        max_ratio=a.max_ratio,
        dedup=a.dedup,
        seed=a.seed,
        tokenizer=a.tokenizer,
    )
    m = prepare(train, valid, a.out, opts, log=lambda s: print(s, file=sys.stderr))
    print(f"prepared {m['sizes']['train']} training and {m['sizes']['valid']} validation pairs in {a.out}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# train


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a prepared folder",
        description="Train (or --resume) a Transformer. Extra key=value arguments override the configuration, "
        "e.g. model.dropout=0.3 lr=7e-4.",
    )
    p.add_argument("--data", required=True, help="prepared-data folder")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, learning curve)")
    p.add_argument("--preset", default=None, help="small (default), base, big")
    p.add_argument("--config", help="YAML configuration (applied after the preset)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="fine-tune: start from this run's or checkpoint's weights and architecture (e.g. from import-hf); "
        "prepare the data with `prepare --tokenizer CHECKPOINT`",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_train)


def resolve_train_config(a):
    """preset -> YAML file -> key=value overrides -> budget flags; a resumed run starts from its saved config.
    With --init, the model section comes from that checkpoint (the preset gives the training recipe)."""
    from .config import RunConfig, preset, read_config_dict

    run_cfg = Path(a.out) / "config.yaml"
    if a.resume and run_cfg.exists():
        cfg = RunConfig.load(run_cfg)  # a resumed run keeps its recipe; overrides may extend its budget
    else:
        if getattr(a, "init", None):
            from .train.trainer import finetune_config

            cfg = finetune_config(a.init, a.preset or "small")
        else:
            cfg = preset(a.preset or "small")
        if a.config:
            cfg.update(read_config_dict(a.config), a.config)
    cfg.apply_overrides(a.overrides)
    for name in ("max_steps", "max_epochs", "max_minutes"):
        if getattr(a, name) is not None:
            setattr(cfg.train, name, getattr(a, name))
    cfg.validate()
    return cfg


def cmd_train(a) -> int:
    from .train.trainer import train

    cfg = resolve_train_config(a)
    result = train(a.data, a.out, cfg, resume=a.resume, device=a.device, progress=not a.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{result.best_metric:.3f}" if result.best_metric is not None else "n/a"
        print(
            f"stopped by {result.stopped_by} after {result.steps} steps ({result.elapsed_minutes:.1f} min); "
            f"best {result.metric} {best} at step {result.best_step}; run folder {result.run_dir}"
        )
    return 0


# ---------------------------------------------------------------------------------------------------------------
# average


def _add_average(sub) -> None:
    p = sub.add_parser("average", help="average the last K checkpoints of a run (or given ones)")
    p.add_argument("run", help="run folder")
    p.add_argument("--last", type=int, default=5, help="how many of the newest step checkpoints")
    p.add_argument("--checkpoints", nargs="+", help="explicit checkpoint folders instead of --last")
    p.add_argument("--out", help="output checkpoint folder (default: RUN/averaged)")
    p.add_argument(
        "--select",
        action="store_true",
        help="choose on the run's validation set between the best checkpoint, the last one and averages of the "
        "last 2..K (--last), by sacreBLEU; writes the winner and selection.json",
    )
    p.add_argument("--beam", type=int, default=4, help="with --select: beam size of the validation decoding")
    p.add_argument("--valid-sentences", type=int, default=0, help="with --select: at most N sentences (0: all)")
    p.set_defaults(func=cmd_average)


def cmd_average(a) -> int:
    from .errors import CheckpointError
    from .train.checkpoint import average_checkpoints, list_checkpoints

    if a.select:
        from .errors import ConfigurationError
        from .train.select import select_checkpoint

        if a.checkpoints:
            raise ConfigurationError("--select chooses among the run's own checkpoints: use --last, not --checkpoints")
        select_checkpoint(a.run, a.out, a.last, a.beam, a.valid_sentences)
        return 0
    folders = a.checkpoints or [str(p) for p in list_checkpoints(a.run)[-a.last :]]
    if not folders:
        raise CheckpointError(f"{a.run}: no step checkpoints to average")
    out = a.out or str(Path(a.run) / "averaged")
    average_checkpoints(folders, out)
    print(f"averaged {len(folders)} checkpoints ({', '.join(Path(f).name for f in folders)}) into {out}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# translate / evaluate


def _add_decoding_args(p) -> None:
    p.add_argument("--beam", type=int, default=4, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=0.6, help="GNMT length penalty alpha")
    p.add_argument("--max-len-a", type=float, default=1.5)
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument(
        "--patience",
        type=int,
        default=1,
        help="--engine ct2: finished hypotheses per beam before CTranslate2 stops; 2 agrees with the native search "
        "more often under a length penalty (12-25%% slower); no effect on the native engine, which needs none",
    )
    p.add_argument("--sampling", action="store_true", help="sample instead of searching")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--checkpoints", nargs="+", help="more checkpoints to ensemble with RUN")
    p.add_argument("--batch-size", type=int, default=64, help="most sentences per batch")
    p.add_argument("--batch-tokens", type=int, default=6000, help="token budget per batch (beam rows counted)")
    p.add_argument(
        "--engine",
        choices=["native", "ct2"],
        default="native",
        help="ct2: decode with CTranslate2 (RUN may also be a folder from `lucidmt export --to ctranslate2`)",
    )
    p.add_argument(
        "--quantize",
        choices=["none", "int8", "int16", "bf16", "fp16"],
        help="int8: int8 linear layers (CPU); bf16/fp16: half-precision weights (CUDA); int16: ct2 only",
    )
    p.add_argument(
        "--no-prepack",
        action="store_true",
        help="CPU fp32: do not keep the decoder weights in MKL's packed layout (saves memory, ~10-20%% slower)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="CPU: decode N batches at a time, each with (torch threads / N) threads: more sentences per second on "
        "multi-core CPUs (native engine: N processes, N copies of the model; ct2: CTranslate2's inter_threads)",
    )


def _decode_options(a, n_best: int = 1) -> dict:
    return dict(
        n_best=n_best,
        length_penalty=a.length_penalty,
        max_len_a=a.max_len_a,
        max_len_b=a.max_len_b,
        sampling=a.sampling,
        temperature=a.temperature,
        top_k=a.top_k,
        top_p=a.top_p,
        seed=a.seed,
        patience=a.patience,
    )


def _load_translator(a):
    import atexit

    from .decode.translator import Translator

    tr = Translator.load(
        a.run,
        device=a.device,
        checkpoints=a.checkpoints,
        max_batch_size=a.batch_size,
        max_batch_tokens=a.batch_tokens,
        quantize=a.quantize,
        engine=a.engine,
        prepack=not a.no_prepack,
        workers=a.workers,
    )
    if tr.pool is not None:
        atexit.register(tr.close)  # stop the worker processes
    return tr


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate lines (stdin -> stdout by default)")
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint folder")
    p.add_argument("--input", "-i", help="input file (default: stdin)")
    p.add_argument("--output", "-o", help="output file (default: stdout), written atomically")
    p.add_argument("--nbest", type=int, default=1, help="print N hypotheses per line as 'i ||| text ||| score'")
    p.add_argument("--scores", action="store_true", help="print 'score<TAB>translation'")
    p.add_argument(
        "--alignments",
        action="store_true",
        help="append '<TAB>' and the Pharaoh word alignment (source-target) from cross-attention (with --nbest: "
        "a fourth ||| field)",
    )
    p.add_argument("--alignment-layer", type=int, help="align with this decoder layer (default: mean of layers)")
    _add_decoding_args(p)
    p.set_defaults(func=cmd_translate)


def _format(i: int, tr, nbest: int, scores: bool, align=None) -> list[str]:
    if nbest > 1:
        if align is not None:
            return [f"{i} ||| {h.text} ||| {h.score:.4f} ||| {align(tr, k)}" for k, h in enumerate(tr.hypotheses)]
        return [f"{i} ||| {h.text} ||| {h.score:.4f}" for h in tr.hypotheses]
    h = tr.hypotheses[0]
    line = f"{h.score:.4f}\t{h.text}" if scores else h.text
    return [line + "\t" + align(tr, 0) if align is not None else line]


def _aligner(a, tr):
    """None, or a function (Translation, hypothesis index) -> Pharaoh alignment string."""
    if not getattr(a, "alignments", False):
        return None
    from .explain.alignment import hypothesis_alignment

    cfg = tr.config
    src_lang, tgt_lang = (cfg.data.src_lang, cfg.data.tgt_lang) if cfg is not None else ("", "")
    return lambda t, k: hypothesis_alignment(t, k, a.alignment_layer, src_lang, tgt_lang)


def cmd_translate(a) -> int:
    from .io import iter_lines, write_lines

    tr = _load_translator(a)
    opts = _decode_options(a, a.nbest)
    align = _aligner(a, tr)
    if align is not None:
        opts["return_attention"] = a.alignment_layer is None
        opts["return_attention_layers"] = a.alignment_layer is not None
    if a.input:
        lines = list(iter_lines(a.input))
        results = tr.translate_batch(lines, a.beam, progress=True, **opts)
        out = [row for i, r in enumerate(results) for row in _format(i, r, a.nbest, a.scores, align)]
        if a.output:
            write_lines(a.output, out)
        else:
            sys.stdout.write("".join(x + "\n" for x in out))
        return 0
    # stdin: line by line when interactive, in chunks when piped; order is kept, output flushed per chunk
    chunk = 1 if sys.stdin.isatty() else max(1, a.batch_size)
    out_rows: list[str] = []
    buf: list[str] = []
    idx = 0

    def flush():
        nonlocal idx, buf
        for r in tr.translate_batch(buf, a.beam, **opts):
            rows = _format(idx, r, a.nbest, a.scores, align)
            idx += 1
            if a.output:
                out_rows.extend(rows)
            else:
                sys.stdout.write("".join(x + "\n" for x in rows))
        sys.stdout.flush()
        buf = []

    for raw in sys.stdin.buffer:
        try:
            buf.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError:
            raise LucidError(f"<stdin>:{idx + len(buf) + 1}: invalid UTF-8") from None
        if len(buf) >= chunk:
            flush()
    if buf:
        flush()
    if a.output:
        write_lines(a.output, out_rows)
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="translate a test set and score it (BLEU, chrF, tokenised BLEU)")
    p.add_argument("run", help="run folder or checkpoint folder")
    p.add_argument("--src", help="source file")
    p.add_argument("--ref", help="reference file")
    p.add_argument("--dataset", help="named dataset, e.g. multi30k")
    p.add_argument("--split", default="test", help="split of the named dataset (e.g. test_2016_flickr)")
    p.add_argument("--data-dir")
    p.add_argument("--src-lang", help="default: from the model's configuration")
    p.add_argument("--tgt-lang", help="default: from the model's configuration")
    p.add_argument("--hyps", help="also write the translations to this file")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    _add_decoding_args(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(a) -> int:
    from .data.corpus import load_dataset, read_parallel
    from .errors import DataError
    from .evaluate import score
    from .io import write_lines

    tr = _load_translator(a)
    src_lang = a.src_lang or tr.config.data.src_lang
    tgt_lang = a.tgt_lang or tr.config.data.tgt_lang
    if a.dataset:
        data = load_dataset(a.dataset, a.split, src_lang, tgt_lang, a.data_dir)
    elif a.src and a.ref:
        data = read_parallel(a.src, a.ref)
    else:
        raise DataError("give --src and --ref, or --dataset (with --split)")
    import time

    t0 = time.perf_counter()
    hyps = tr.translate(data.src, a.beam, progress=True, **_decode_options(a))
    seconds = time.perf_counter() - t0
    if a.hyps:
        write_lines(a.hyps, hyps)
    s = score(hyps, data.tgt, tgt_lang)
    from .decode.search import DecodeOptions

    decoding = DecodeOptions(beam_size=a.beam, **_decode_options(a)).signature() + f"|engine:{tr.backend}"
    if a.json:
        print(json.dumps(s.to_dict() | {"decoding": decoding, "model": tr.source, "seconds": seconds}, indent=2))
    else:
        print(f"{data.origin}: {s.n} sentences, {tr.source}, {decoding}, {seconds:.1f} s")
        print(s.table(), end="")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# small helpers


def _add_curve(sub) -> None:
    p = sub.add_parser("curve", help="redraw a run's learning curve (PNG)")
    p.add_argument("run")
    p.add_argument("--out", help="default: RUN/learning_curve.png")
    p.set_defaults(func=cmd_curve)


def cmd_curve(a) -> int:
    from .train.metrics import plot_learning_curve

    print(plot_learning_curve(a.run, a.out))
    return 0


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the named datasets")
    p.set_defaults(func=cmd_datasets)


def cmd_datasets(a) -> int:
    from .data.corpus import DATASETS

    for d in DATASETS.values():
        print(f"{d.name:15} {'/'.join(d.languages):12} {d.description}")
    return 0


# Verbs of the sub-packages (export, import-hf, serve, explain, audit, ...): each module has `add_parsers(sub)`
# and imports its heavy dependencies only when its command runs.
VERB_MODULES = ("lucidmt.interop.cli", "lucidmt.serve.cli", "lucidmt.explain.cli", "lucidmt.audit.cli")


def _add_module_verbs(sub) -> None:
    import importlib

    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that sub-package is not part of this build
            raise
        module.add_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lucidmt", description="Transformer machine translation toolkit")
    parser.add_argument("--version", action="version", version=f"lucidmt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_prepare, _add_train, _add_average, _add_translate, _add_evaluate, _add_curve, _add_datasets):
        add(sub)
    _add_module_verbs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING, format="lucidmt: %(message)s")
    from .runtime import tune_allocator

    tune_allocator()
    try:
        return a.func(a) or 0
    except LucidError as exc:
        print(f"lucidmt: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("lucidmt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
