"""Translation speed: lucidmt's native beam search (fp32, int8) beside Hugging Face `generate` and CTranslate2,
all running the same base-preset weights, in one process, on the 1,000 sentences of Multi30k test_2016_flickr.

    python benchmarks/decode_speed.py --random                 # random base weights, every output 32 tokens
    python benchmarks/decode_speed.py --model RUN              # a trained base model (realistic lengths)
    python benchmarks/decode_speed.py --train-minutes 30       # train a base model first (then as --model)

The weights reach the peers through lucidmt's own exports (`export --to huggingface`, `--to ctranslate2`).
Engines: native fp32 / int8 (`Translator.load(quantize=...)`), HF `generate` fp32 and with torch dynamic int8
(`quantize_dynamic` on its nn.Linear layers, with torch's default kernels, and `hf-int8-onednn` with oneDNN's, which
lucidmt's int8 uses for calls of 64 rows or more), CTranslate2 fp32 / int8 through `Translator.load(engine="ct2")`,
and CTranslate2 called directly on pre-tokenised input with the same search options (the reference for the
engine's overhead). Every engine gets beam 4, batches of 32 sentences sorted by length (HF and CTranslate2 too),
`--threads` threads (torch.set_num_threads, CTranslate2 intra_threads). With --random, eos gets a -30 logit bias
and the length limit is 32 tokens, so every engine produces exactly 32 tokens per sentence (the setting of the
issue's reference figures). glibc's allocator is tuned process-wide (`lucidmt.runtime.tune_allocator`), so
it applies to every engine alike, except the extra row `hf-glibc`: HF `generate` as a user runs it, with
glibc's defaults (ratios are against the tuned HF row). Each round runs every engine once, in a rotated order;
the table shows the best round per engine (the least disturbed by other processes), target tokens/s = output
subwords (eos excluded) / seconds, and how many outputs equal native fp32's.

`--engines` may add rows that use the threads as single-threaded workers instead (inter-op parallelism, as
Marian's --cpu-threads and CTranslate2's inter_threads do): `native-2w`, `native-int8-2w` (`Translator.load(...,
workers=2)`), `ct2-2w`, `ct2-int8-2w` (CTranslate2 through lucidmt with `workers=2`, i.e. inter_threads=2),
`ct2-direct-2w`, `ct2-int8-direct-2w` (inter_threads=2), and `hf-2p`, `hf-int8-2p` (HF `generate` in
2 processes of 1 thread, each given every other batch, started together once loaded). "same layout" compares a
row with HF fp32 run the same way (1 process of 2 threads, or 2 of 1).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from _common import hardware, out_dir, prepared_multi30k
from lucidmt.config import preset, read_config_dict
from lucidmt.data.corpus import load_dataset
from lucidmt.data.tokenizer import Tokenizer
from lucidmt.decode.translator import Translator
from lucidmt.model import Seq2Seq
from lucidmt.runtime import tune_allocator
from lucidmt.train.checkpoint import resolve_checkpoint, save_checkpoint

FORCED = 32  # --random: tokens per output


def random_model(folder: Path, data: Path) -> Path:
    tok = Tokenizer(data / "tokenizer")
    cfg = preset("base")
    cfg.model.src_vocab_size = cfg.model.tgt_vocab_size = tok.src.get_piece_size()
    cfg.model.final_logits_bias = True
    cfg.data.src_lang, cfg.data.tgt_lang = "en", "de"
    torch.manual_seed(0)
    model = Seq2Seq(cfg.model).eval()
    with torch.no_grad():
        model.logits_bias[cfg.model.eos_id] = -30.0  # no output ends before the limit, in any engine
    return save_checkpoint(folder, model, cfg, tok)


def train_model(folder: Path, data: Path, minutes: float) -> Path:
    from lucidmt.train.trainer import train

    cfg = preset("base")
    cfg.model.dropout = 0.1
    t = cfg.train
    t.max_minutes, t.schedule, t.lr, t.warmup_steps, t.max_tokens = minutes, "cosine", 8e-4, 500, 4096
    t.valid_every, t.valid_max_sentences, t.keep_last = 400, 300, 1
    train(data, folder, cfg, progress=True)
    return resolve_checkpoint(folder)


class Engine:
    """One way of translating the corpus; `run` returns the outputs as target-id lists."""

    def __init__(self, name: str, precision: str, run):
        self.name, self.precision, self.run = name, precision, run


def native(ckpt: Path, quantize: str | None, opts: dict, batch: int, workers: int = 1) -> Engine:
    tr = Translator.load(ckpt, device="cpu", quantize=quantize, max_batch_size=batch, max_batch_tokens=10**9,
                         workers=workers)  # fmt: skip

    def run(texts):
        return [t.best.token_ids for t in tr.translate_batch(texts, **opts)]

    name = "lucidmt native" if workers == 1 else f"lucidmt native, {workers} worker processes x 1 thread"
    return Engine(name, quantize or "fp32", run)


def ct2_engine(export: Path, quantize: str | None, opts: dict, batch: int, threads: int, workers: int = 1) -> Engine:
    tr = Translator.load(export, engine="ct2", quantize=quantize, threads=max(1, threads // workers),
                         max_batch_size=batch, max_batch_tokens=10**9, workers=workers)  # fmt: skip

    def run(texts):
        return [t.best.token_ids for t in tr.translate_batch(texts, **opts)]

    name = "CTranslate2 via lucidmt" if workers == 1 else f"CTranslate2 via lucidmt, workers={workers} x 1 thread"
    return Engine(name, quantize or "fp32", run)


def ct2_direct(export: Path, compute_type: str, opts: dict, batch: int, threads: int, tokenizer, limit: int,
               inter: int = 1):  # fmt: skip
    """CTranslate2's own API (SentencePiece pieces in, pieces out) with the options lucidmt's engine passes;
    `inter` > 1: that many batches decoded in parallel (inter_threads), each with threads / inter threads."""
    import ctranslate2

    from lucidmt.decode.search import DecodeOptions
    from lucidmt.interop.ctranslate2 import CT2Engine

    engine = CT2Engine(export, "cpu", None, threads)  # only to read the vocabularies and the option mapping
    translator = ctranslate2.Translator(str(export), device="cpu", compute_type=compute_type,
                                        intra_threads=max(1, threads // inter), inter_threads=inter)  # fmt: skip
    d = DecodeOptions(**opts)
    kw = engine.options([[0] * limit], d)  # one length limit for the whole call
    tgt_ids = engine.tgt_ids

    def run(texts):
        pieces = [p + ["</s>"] for p in tokenizer.src.encode(texts, out_type=str)]  # SentencePiece, as users do
        results = translator.translate_batch(pieces, max_batch_size=batch, **kw)
        out = []
        for r in results:
            lp = d.length_penalty  # ranked as lucidmt's engine ranks (GNMT penalty, the eos counted)
            best = max(range(len(r.scores)), key=lambda k: r.scores[k] / ((5 + len(r.hypotheses[k]) + 1) / 6) ** lp)
            out.append([tgt_ids[p] for p in r.hypotheses[best]])
        return out

    name = "CTranslate2 direct" if inter == 1 else f"CTranslate2 direct, inter_threads={inter} x 1 thread"
    return Engine(name, {"int8": "int8"}.get(compute_type, "fp32"), run)


def hf_engine(export: Path, quantize: bool, batch: int, beam: int, max_new: int | None, engine: str = "") -> Engine:
    """`engine`: the quantized engine to pack HF's int8 layers for ("" for torch's default)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(export).eval()
    tok = AutoTokenizer.from_pretrained(export)
    if quantize:
        from torch.ao.quantization import quantize_dynamic

        from lucidmt.decode.quantize import quantized_engine

        with warnings.catch_warnings(), quantized_engine(engine or torch.backends.quantized.engine):
            warnings.simplefilter("ignore")
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    specials = {model.config.pad_token_id, model.config.eos_token_id, model.config.decoder_start_token_id}

    def run(texts):
        order = sorted(range(len(texts)), key=lambda i: len(tok(texts[i]).input_ids))
        out: list[list[int] | None] = [None] * len(texts)
        with torch.inference_mode():
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True)
                limit = max_new or int(1.5 * enc.input_ids.size(1) + 10)
                gen = model.generate(**enc, num_beams=beam, max_new_tokens=limit, do_sample=False)
                for i, row in zip(idx, gen.tolist(), strict=True):
                    out[i] = [t for t in row if t not in specials]
        return out

    return Engine("HF generate", "int8" if quantize else "fp32", run)


ENGINES = ("native", "native-int8", "hf", "hf-int8", "hf-int8-onednn", "hf-glibc", "ct2", "ct2-int8", "ct2-direct",
           "ct2-int8-direct")  # fmt: skip
# the same engines with the two cores used as 2 single-threaded workers (inter-op parallelism)
PARALLEL = ("native-2w", "native-int8-2w", "hf-2p", "hf-int8-2p", "ct2-2w", "ct2-int8-2w", "ct2-direct-2w",
            "ct2-int8-direct-2w")  # fmt: skip


def make_engine(name: str, spec: dict) -> Engine:
    ckpt, hf_dir, ct2_dir = Path(spec["ckpt"]), Path(spec["hf"]), Path(spec["ct2"])
    opts, batch, threads, beam = spec["opts"], spec["batch"], spec["threads"], spec["opts"]["beam_size"]
    workers = 2 if name.endswith("-2w") else 1
    if name in ("native", "native-2w"):
        return native(ckpt, None, opts, batch, workers)
    if name in ("native-int8", "native-int8-2w"):
        return native(ckpt, "int8", opts, batch, workers)
    if name in ("hf", "hf-int8", "hf-int8-onednn", "hf-glibc"):
        engine = "onednn" if name == "hf-int8-onednn" else ""
        e = hf_engine(hf_dir, name.startswith("hf-int8"), batch, beam, spec["hf_new"], engine)
        e.name = {
            "hf-glibc": "HF generate, glibc's default allocator",
            "hf-int8-onednn": "HF generate, oneDNN int8 kernels",
        }.get(name, e.name)
        return e
    if name in ("ct2", "ct2-int8", "ct2-2w", "ct2-int8-2w"):
        return ct2_engine(ct2_dir, "int8" if "int8" in name else None, opts, batch, threads, workers)
    tok = Tokenizer(ckpt / "tokenizer")
    return ct2_direct(ct2_dir, "int8" if "int8" in name else "float32", opts, batch, threads, tok, spec["limit"],
                      workers)  # fmt: skip


def split_worker(name: str, spec_file: Path, out_file: Path, parts: int = 2) -> None:
    """HF `generate` in `parts` processes of 1 thread, each given every parts-th batch of the length-sorted
    corpus: both load and warm up, then start together on a signal; the time is until the last one finishes."""
    import subprocess
    import sys

    base = name.removesuffix(f"-{parts}p")
    outs = [out_file.with_suffix(f".{k}.json") for k in range(parts)]
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", f"{base}@{k}/{parts}", str(spec_file), str(o)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
             for k, o in enumerate(outs)]  # fmt: skip
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"{name}: a part failed to start")
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"{name}: a part failed")
    seconds = time.perf_counter() - t0
    spec = json.loads(spec_file.read_text())
    outputs: list = [None] * len(spec["texts"])
    for o in outs:
        part = json.loads(o.read_text())
        for i, ids in zip(part["indices"], part["outputs"], strict=True):
            outputs[i] = ids
    e = part["name"] + f", {parts} processes x 1 thread"
    out_file.write_text(json.dumps({"name": e, "precision": part["precision"], "seconds": seconds, "outputs": outputs}))


def part_worker(name: str, spec: dict, out_file: Path) -> None:
    """One part of `split_worker`: every parts-th batch of 32 length-sorted sentences, on 1 thread."""
    import sys

    base, frac = name.split("@")
    k, parts = map(int, frac.split("/"))
    torch.set_num_threads(max(1, spec["threads"] // parts))
    tune_allocator()
    tok = Tokenizer(Path(spec["ckpt"]) / "tokenizer")
    texts, b = spec["texts"], spec["batch"]
    order = sorted(range(len(texts)), key=lambda i: len(tok.encode_src([texts[i]])[0]))
    mine = [i for j in range(k * b, len(order), parts * b) for i in order[j : j + b]]
    e = make_engine(base, spec)
    e.run([texts[i] for i in mine[: 2 * b]])  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    outputs = e.run([texts[i] for i in mine])
    out_file.write_text(json.dumps({"name": e.name, "precision": e.precision, "indices": mine, "outputs": outputs}))


def worker(name: str, spec_file: Path, out_file: Path) -> None:
    """One timed pass of one engine in a fresh process: PyTorch and CTranslate2 each bring their own OpenMP
    runtime, and sharing a process slows PyTorch by ~25% on 2 cores, so no engine runs beside another."""
    spec = json.loads(spec_file.read_text())
    if "@" in name:
        return part_worker(name, spec, out_file)
    if name.endswith("-2p"):
        return split_worker(name, spec_file, out_file)
    torch.set_num_threads(spec["threads"])
    if name != "hf-glibc":  # hf-glibc: Hugging Face as a user runs it, without lucidmt's allocator settings
        tune_allocator()
    texts = spec["texts"]
    e = make_engine(name, spec)
    e.run(texts[: 2 * spec["batch"]])  # warm-up: first calls allocate, load kernels
    t0 = time.perf_counter()
    outputs = e.run(texts)
    seconds = time.perf_counter() - t0
    out_file.write_text(json.dumps({"name": e.name, "precision": e.precision, "seconds": seconds, "outputs": outputs}))


def build_spec(a, work: Path) -> dict:
    """The model (random, given or trained), its Hugging Face and CTranslate2 exports, the corpus and the search
    options every engine runs with."""
    data = prepared_multi30k(out_dir() / "m30k-en-de")
    if a.random:
        ckpt, what = random_model(work / "random-base", data), "random base-preset weights, every output 32 tokens"
    elif a.model:
        ckpt, what = resolve_checkpoint(a.model), f"trained base-preset model {a.model}"
    else:
        ckpt = train_model(work / "trained-base", data, a.train_minutes)
        what = f"base-preset model trained {a.train_minutes:g} min on Multi30k en-de"
    m = read_config_dict(ckpt / "config.yaml")["model"]
    assert (m["d_model"], m["encoder_layers"]) == (512, 6), "the benchmark runs the base preset"
    tok = Tokenizer(ckpt / "tokenizer")

    from lucidmt.interop.ctranslate2 import export_ctranslate2
    from lucidmt.interop.huggingface import export_huggingface

    hf_dir = export_huggingface(ckpt, work / "export-hf")
    ct2_dir = export_ctranslate2(ckpt, work / "export-ct2")
    texts = load_dataset("multi30k", "test_2016_flickr", "en", "de").src[: a.sentences]
    opts = dict(beam_size=a.beam, length_penalty=0.6)
    if a.random:
        opts |= dict(max_len_a=0.0, max_len_b=FORCED + 1)  # the limit counts the eos
    longest = max(len(x) for x in tok.encode_src(texts)) + 1
    return dict(
        ckpt=str(ckpt), hf=str(hf_dir), ct2=str(ct2_dir), opts=opts, batch=a.batch, threads=a.threads, texts=texts,
        hf_new=FORCED + 1 if a.random else None,  # 32 tokens + the forced eos
        limit=FORCED + 1 if a.random else int(1.5 * longest + 10), what=what,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--random", action="store_true", help="random base weights, outputs forced to 32 tokens")
    src.add_argument("--model", help="a trained base-preset run or checkpoint")
    src.add_argument("--train-minutes", type=float, help="train a base model on Multi30k first")
    src.add_argument("--worker", nargs=3, metavar=("ENGINE", "SPEC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--table-only", action="store_true", help="print the table from the last passes (1 round)")
    a = ap.parse_args()
    if a.table_only:
        a.rounds = 1  # the pass files hold one round each
    if a.worker:
        return worker(a.worker[0], Path(a.worker[1]), Path(a.worker[2]))

    import subprocess
    import sys

    torch.set_num_threads(a.threads)
    work = out_dir() / "decode_speed"
    spec_file = work / "spec.json"
    if a.table_only:  # the model, the exports and the spec of the run that wrote the passes
        spec = json.loads(spec_file.read_text())
    else:
        spec = build_spec(a, work)
        spec_file.write_text(json.dumps(spec))
    texts, opts, what = spec["texts"], spec["opts"], spec.get("what", "the model of the last run")
    names = [n for n in a.engines.split(",") if n]
    unknown = set(names) - set(ENGINES) - set(PARALLEL)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES + PARALLEL)}")
    results: dict[str, dict] = {}
    for r in range(a.rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            out = work / f"pass-{n}.json"
            if not a.table_only:
                cmd = [sys.executable, __file__, "--worker", n, str(spec_file), str(out)]
                subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
            res = json.loads(out.read_text())
            entry = results.setdefault(n, res | {"seconds": []})
            entry["seconds"].append(res["seconds"])
            entry["outputs"] = res["outputs"]
            tok_s = sum(map(len, res["outputs"])) / res["seconds"]
            print(f"round {r + 1} {n:16s} {res['seconds']:7.1f} s {tok_s:8.1f} tok/s", flush=True)

    def rate(n):
        e = results[n]
        return sum(map(len, e["outputs"])) / min(e["seconds"])

    ref = results.get("native")
    hf = rate("hf") if "hf" in results else None
    hf_2p = rate("hf-2p") if "hf-2p" in results else None
    direct = {(p, w): rate(f"ct2{q}-direct{w}") for p, q in (("fp32", ""), ("int8", "-int8")) for w in ("", "-2w")
              if f"ct2{q}-direct{w}" in results}  # fmt: skip
    rows = []
    for n in names:
        e = results[n]
        r = rate(n)
        vs_hf = f"{r / hf:.2f}x" if hf else "n/a"
        parallel = n in PARALLEL
        like = hf_2p if parallel else hf  # HF fp32 with the cores used the same way
        vs_like = f"{r / like:.2f}x" if like else "n/a"
        vs_ct2 = "n/a"
        layout = "-2w" if n.endswith("-2w") else ""
        if n in ("ct2", "ct2-int8", "ct2-2w", "ct2-int8-2w") and direct.get((e["precision"], layout)):
            vs_ct2 = f"{r / direct[(e['precision'], layout)]:.3f}x"  # against CTranslate2 direct, same layout
        same = "n/a"
        if ref is not None:
            equal = sum(x == y for x, y in zip(e["outputs"], ref["outputs"], strict=True))
            same = f"{100 * equal / len(texts):.1f}%"
        rows.append(f"| {e['name']} | {e['precision']} | {r:,.0f} | {vs_hf} | {vs_like} | {vs_ct2} | {same} |")
    header = (
        f"Decoding speed, {len(texts)} sentences of Multi30k test_2016_flickr (en→de), {what}; "
        f"beam {opts['beam_size']}, batches of {spec['batch']} length-sorted sentences, CPU {hardware()}, each engine "
        f"in its own process, best of {a.rounds} rounds; target tokens/s (eos excluded); tuned glibc allocator for "
        "all engines but `hf-glibc`."
    )
    table = "\n".join(
        [
            header,
            "",
            "| engine | precision | target tokens/s | vs HF generate fp32 | vs HF fp32, same layout "
            "| vs CTranslate2 direct | = native fp32 |",
            "|---|---|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print()
    print(table)
    (work / "table.md").write_text(table + "\n")
    raw = {n: {"seconds": e["seconds"], "tokens": sum(map(len, e["outputs"]))} for n, e in results.items()}
    (work / "raw.json").write_text(json.dumps({"what": what, "opts": opts, "engines": raw}, indent=2))


if __name__ == "__main__":
    main()
