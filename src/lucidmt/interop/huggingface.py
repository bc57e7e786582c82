"""Hugging Face: import pretrained Marian models (opus-mt), export lucidmt models that `transformers` loads.

    lucidmt import-hf HF_DIR OUT          a MarianMTModel folder -> a lucidmt run folder (OUT/best/)
    lucidmt export RUN --to huggingface OUT

Both directions are a rename table over the weights plus a configuration, checked before anything is written:
the converted model and the original must give the same logits on a probe batch (`verify`).

The architectures match one to one. `MarianMTModel` is our post-norm Transformer (Marian's sinusoidal layout,
positions from 0, scaled embeddings, `final_logits_bias`, relu/gelu/swish, the decoder starting from the pad
token); `PegasusForConditionalGeneration` is the same model with pre-norm and a final LayerNorm per stack, which
is lucidmt's default, so pre-norm models export as Pegasus. Hugging Face keeps q, k and v (and the cross
attention's k and v) as separate Linear layers where we fuse them; the table splits and concatenates rows.

Tokenizers: opus-mt folders carry `source.spm`, `target.spm` and one `vocab.json` (piece -> id) shared by both
sides; lucidmt's tokenizer reads exactly that (its "Marian mode"). Exports write the same three files plus a
`tokenizer_config.json`, so `AutoTokenizer` gives a `MarianTokenizer` with lucidmt's ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .. import __version__
from ..config import RunConfig
from ..data.tokenizer import Tokenizer, TokenizerInfo
from ..errors import CheckpointError, ConfigurationError
from ..io import atomic_path, write_json
from ..model.transformer import Seq2Seq

TO_HF_ACTIVATION = {"relu": "relu", "gelu": "gelu", "swish": "swish"}
FROM_HF_ACTIVATION = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "swish"}
HF_LAYER_NORM_EPS = 1e-5  # Marian and Pegasus build nn.LayerNorm(d_model) with the default epsilon
ARCHITECTURES = {"marian": "MarianMTModel", "pegasus": "PegasusForConditionalGeneration"}


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigurationError("the Hugging Face bridge needs transformers: pip install 'lucidmt[hf]'") from None
    return transformers


# -- the rename table ---------------------------------------------------------------------------------------------
def _pairs(cfg) -> list[tuple[str, list[str]]]:
    """(our parameter name, the Hugging Face names it is made of, concatenated along rows), for every weight
    except embeddings, output projection and logits bias, which depend on sharing and are handled apart."""
    out: list[tuple[str, list[str]]] = []
    for suffix in ("weight", "bias"):
        for i in range(cfg.encoder_layers):
            a, b = f"encoder.layers.{i}.", f"model.encoder.layers.{i}."
            out += [
                (a + f"self_attn.qkv.{suffix}", [b + f"self_attn.{p}_proj.{suffix}" for p in "qkv"]),
                (a + f"self_attn.out.{suffix}", [b + f"self_attn.out_proj.{suffix}"]),
                (a + f"attn_block.norm.{suffix}", [b + f"self_attn_layer_norm.{suffix}"]),
                (a + f"ffn.fc1.{suffix}", [b + f"fc1.{suffix}"]),
                (a + f"ffn.fc2.{suffix}", [b + f"fc2.{suffix}"]),
                (a + f"ffn_block.norm.{suffix}", [b + f"final_layer_norm.{suffix}"]),
            ]
        for i in range(cfg.decoder_layers):
            a, b = f"decoder.layers.{i}.", f"model.decoder.layers.{i}."
            out += [
                (a + f"self_attn.qkv.{suffix}", [b + f"self_attn.{p}_proj.{suffix}" for p in "qkv"]),
                (a + f"self_attn.out.{suffix}", [b + f"self_attn.out_proj.{suffix}"]),
                (a + f"self_block.norm.{suffix}", [b + f"self_attn_layer_norm.{suffix}"]),
                (a + f"cross_attn.q.{suffix}", [b + f"encoder_attn.q_proj.{suffix}"]),
                (a + f"cross_attn.kv.{suffix}", [b + f"encoder_attn.{p}_proj.{suffix}" for p in "kv"]),
                (a + f"cross_attn.out.{suffix}", [b + f"encoder_attn.out_proj.{suffix}"]),
                (a + f"cross_block.norm.{suffix}", [b + f"encoder_attn_layer_norm.{suffix}"]),
                (a + f"ffn.fc1.{suffix}", [b + f"fc1.{suffix}"]),
                (a + f"ffn.fc2.{suffix}", [b + f"fc2.{suffix}"]),
                (a + f"ffn_block.norm.{suffix}", [b + f"final_layer_norm.{suffix}"]),
            ]
        if cfg.norm == "pre":
            out += [
                (f"encoder.norm.{suffix}", [f"model.encoder.layer_norm.{suffix}"]),
                (f"decoder.norm.{suffix}", [f"model.decoder.layer_norm.{suffix}"]),
            ]
    return out


def to_hf_state(model: Seq2Seq) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face names (tied weights once, under the name HF ties the others to)."""
    cfg = model.cfg
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, theirs in _pairs(cfg):
        for hf_name, part in zip(theirs, ours[name].chunk(len(theirs), dim=0), strict=True):
            out[hf_name] = part.clone()
    if cfg.share_embeddings:
        out["model.shared.weight"] = ours["encoder.embed.tokens.weight"]
    else:
        out["model.encoder.embed_tokens.weight"] = ours["encoder.embed.tokens.weight"]
        out["model.decoder.embed_tokens.weight"] = ours["decoder.embed.tokens.weight"]
    if not cfg.tie_output:
        out["lm_head.weight"] = ours["output.weight"]
    bias = ours.get("logits_bias")
    out["final_logits_bias"] = (bias if bias is not None else torch.zeros(cfg.tgt_vocab_size))[None, :]
    return out


def from_hf_state(sd: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """Hugging Face weights (a Marian/Pegasus state dict) under our names; missing or misshapen names raise."""
    sd = {k: v for k, v in sd.items() if not k.endswith("embed_positions.weight")}  # recomputed, never learned
    if "model.shared.weight" not in sd and any(k.startswith("encoder.") for k in sd):
        sd = {("model." + k if k.startswith(("encoder.", "decoder.", "shared.")) else k): v for k, v in sd.items()}

    def get(*names: str) -> torch.Tensor:
        for n in names:
            if n in sd:
                return sd[n].float()
        raise CheckpointError(f"the Hugging Face weights have none of {', '.join(names)}")

    out: dict[str, torch.Tensor] = {}
    for name, theirs in _pairs(cfg):
        out[name] = torch.cat([get(t) for t in theirs], dim=0)
    src = get("model.shared.weight", "model.encoder.embed_tokens.weight")
    out["encoder.embed.tokens.weight"] = src
    if not cfg.share_embeddings:
        out["decoder.embed.tokens.weight"] = get("model.decoder.embed_tokens.weight")
    if not cfg.tie_output:
        out["output.weight"] = get("lm_head.weight")
    if cfg.final_logits_bias:
        out["logits_bias"] = get("final_logits_bias").reshape(-1)
    return out


# -- configurations ---------------------------------------------------------------------------------------------
def hf_config(cfg):
    """The transformers configuration (MarianConfig or PegasusConfig) of a lucidmt ModelConfig."""
    transformers = _require_transformers()
    problems = []
    if cfg.positions != "sinusoidal":
        problems.append("model.positions=learned (Marian and Pegasus compute sinusoidal positions)")
    if cfg.layer_norm_eps != HF_LAYER_NORM_EPS:
        problems.append(f"model.layer_norm_eps={cfg.layer_norm_eps} (they use {HF_LAYER_NORM_EPS})")
    if cfg.norm == "pre" and not cfg.share_embeddings:
        problems.append("pre-norm with separate source/target embeddings (Pegasus shares them)")
    if problems:
        raise ConfigurationError("no Hugging Face counterpart for " + "; ".join(problems))
    common = dict(
        vocab_size=cfg.src_vocab_size,
        d_model=cfg.d_model,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.n_heads,
        decoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=cfg.ffn_dim,
        decoder_ffn_dim=cfg.ffn_dim,
        activation_function=TO_HF_ACTIVATION[cfg.activation],
        max_position_embeddings=cfg.max_positions,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        scale_embedding=cfg.scale_embeddings,
        pad_token_id=cfg.pad_id,
        eos_token_id=cfg.eos_id,
        forced_eos_token_id=cfg.eos_id,
        decoder_start_token_id=cfg.bos_id,
        tie_word_embeddings=cfg.tie_output,
    )
    if cfg.norm == "pre":
        return transformers.PegasusConfig(**common)
    return transformers.MarianConfig(
        **common,
        decoder_vocab_size=cfg.tgt_vocab_size,
        share_encoder_decoder_embeddings=cfg.share_embeddings,
    )


def model_config_from_hf(hc, base=None):
    """A lucidmt ModelConfig for a transformers MarianConfig/PegasusConfig."""
    from ..config import ModelConfig

    kind = hc.model_type
    if kind not in ARCHITECTURES:
        raise ConfigurationError(f"model_type={kind!r}: lucidmt imports {', '.join(ARCHITECTURES)} models")
    act = FROM_HF_ACTIVATION.get(hc.activation_function)
    if act is None:
        raise ConfigurationError(f"activation_function={hc.activation_function!r} has no lucidmt counterpart")
    if hc.encoder_attention_heads != hc.decoder_attention_heads:
        raise ConfigurationError("encoder and decoder attention heads differ; lucidmt uses one n_heads")
    if hc.encoder_ffn_dim != hc.decoder_ffn_dim:
        raise ConfigurationError("encoder and decoder FFN widths differ; lucidmt uses one ffn_dim")
    shared = getattr(hc, "share_encoder_decoder_embeddings", True)
    tgt_vocab = getattr(hc, "decoder_vocab_size", None) or hc.vocab_size
    mc = base or ModelConfig()
    for k, v in dict(
        src_vocab_size=hc.vocab_size,
        tgt_vocab_size=tgt_vocab if not shared else hc.vocab_size,
        d_model=hc.d_model,
        n_heads=hc.encoder_attention_heads,
        encoder_layers=hc.encoder_layers,
        decoder_layers=hc.decoder_layers,
        ffn_dim=hc.encoder_ffn_dim,
        dropout=float(hc.dropout),
        attention_dropout=float(hc.attention_dropout),
        activation_dropout=float(hc.activation_dropout),
        activation=act,
        norm="pre" if kind == "pegasus" else "post",
        positions="sinusoidal",
        max_positions=hc.max_position_embeddings,
        share_embeddings=shared,
        tie_output=bool(hc.tie_word_embeddings),
        scale_embeddings=bool(hc.scale_embedding),
        final_logits_bias=True,
        layer_norm_eps=HF_LAYER_NORM_EPS,
        pad_id=hc.pad_token_id,
        eos_id=hc.eos_token_id if isinstance(hc.eos_token_id, int) else hc.eos_token_id[0],
        bos_id=hc.decoder_start_token_id,
    ).items():
        setattr(mc, k, v)
    mc.validate()
    return mc


def to_hf_model(model: Seq2Seq):
    """An in-memory transformers model with our weights (MarianMTModel for post-norm, Pegasus for pre-norm)."""
    transformers = _require_transformers()
    hc = hf_config(model.cfg)
    cls = transformers.PegasusForConditionalGeneration if model.cfg.norm == "pre" else transformers.MarianMTModel
    hf = cls(hc).eval()
    result = hf.load_state_dict(to_hf_state(model), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("embed_positions.weight")]
    tied = {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    missing = [k for k in missing if k not in tied]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"export: weights left unset {missing[:5]}, unknown {result.unexpected_keys[:5]}")
    _generation_defaults(hf, model.cfg)
    return hf


def _generation_defaults(hf, cfg) -> None:
    """Generation settings that mirror lucidmt's search: never produce padding or the start token."""
    g = hf.generation_config
    g.decoder_start_token_id, g.eos_token_id, g.pad_token_id = cfg.bos_id, cfg.eos_id, cfg.pad_id
    g.forced_eos_token_id = cfg.eos_id
    g.bad_words_ids = [[i] for i in sorted({cfg.pad_id, cfg.bos_id} - {cfg.eos_id})]
    g.num_beams = 4
    g.max_length = cfg.max_positions


# -- verification ---------------------------------------------------------------------------------------------------
def probe_batch(cfg, n: int = 3, length: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Source ids (with eos and right padding) and decoder inputs (starting with bos) of plain tokens."""
    g = torch.Generator().manual_seed(seed)
    specials = {cfg.pad_id, cfg.eos_id, cfg.bos_id, cfg.unk_id}
    allowed = torch.tensor([i for i in range(min(cfg.src_vocab_size, cfg.tgt_vocab_size)) if i not in specials])
    src = allowed[torch.randint(len(allowed), (n, length), generator=g)]
    src[:, -1] = cfg.eos_id
    for i in range(1, n):  # ragged: the later rows are padded
        src[i, length - 1 - i :] = cfg.pad_id
        src[i, length - 2 - i] = cfg.eos_id
    tgt = allowed[torch.randint(len(allowed), (n, length - 2), generator=g)]
    tgt[:, 0] = cfg.bos_id
    return src, tgt


@torch.inference_mode()
def max_logit_difference(model: Seq2Seq, hf) -> float:
    """Largest absolute difference between our logits and the Hugging Face model's on a probe batch."""
    src, tgt = probe_batch(model.cfg)
    ours = model(src, tgt).float()
    theirs = hf(input_ids=src, attention_mask=src != model.cfg.pad_id, decoder_input_ids=tgt).logits.float()
    return float((ours - theirs).abs().max())


def _check(model: Seq2Seq, hf, what: str, tolerance: float) -> float:
    diff = max_logit_difference(model, hf)
    if not diff <= tolerance:
        raise CheckpointError(f"{what}: logits differ by {diff:.3g} (tolerance {tolerance}); nothing was written")
    return diff


# -- export --------------------------------------------------------------------------------------------------------
def _write_hf_tokenizer(tok: Tokenizer, folder: Path, cfg: RunConfig) -> None:
    """MarianTokenizer files: source.spm, target.spm and vocab.json (piece -> lucidmt id)."""
    from .ctranslate2 import vocabulary

    m = cfg.model
    if tok.vocab is not None:
        vocab = dict(tok.vocab)
    else:
        if not tok.info.joint:
            raise ConfigurationError(
                "Hugging Face's MarianTokenizer shares one piece -> id table between the sides; this model has "
                "two SentencePiece vocabularies with their own ids"
            )
        vocab = {p: i for i, p in enumerate(vocabulary(tok, "source", m.src_vocab_size))}
    names = {m.unk_id: "unk_token", m.eos_id: "eos_token", m.pad_id: "pad_token"}
    pieces = {i: p for p, i in vocab.items()}
    shutil.copyfile(tok.folder / tok.info.src_model, folder / "source.spm")
    shutil.copyfile(tok.folder / tok.info.tgt_model, folder / "target.spm")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "MarianTokenizer",
        "source_lang": cfg.data.src_lang or None,
        "target_lang": cfg.data.tgt_lang or None,
        "model_max_length": m.max_positions,
        "separate_vocabs": False,
    } | {name: pieces[i] for i, name in names.items()}
    write_json(folder / "tokenizer_config.json", config)


def export_huggingface(checkpoint: str | Path, out: str | Path, tolerance: float = 1e-4) -> Path:
    """Write a folder that `transformers` loads (`AutoModelForSeq2SeqLM`, `AutoTokenizer`); verified first."""
    from ..train.checkpoint import load_checkpoint, resolve_checkpoint

    folder = resolve_checkpoint(checkpoint)
    model, cfg, tok = load_checkpoint(folder, "cpu")
    hf = to_hf_model(model)
    diff = _check(model, hf, f"export of {folder}", tolerance)
    out = Path(out)
    with atomic_path(out) as tmp:
        hf.save_pretrained(tmp)
        _write_hf_tokenizer(tok, tmp, cfg)
        reloaded = type(hf).from_pretrained(tmp).eval()
        _check(model, reloaded, f"export of {folder} (reloaded)", tolerance)
        write_json(
            tmp / "lucidmt_export.json",
            {"source": str(folder), "architecture": type(hf).__name__, "max_logit_difference": diff}
            | {"lucidmt_version": __version__},
        )
    return out


# -- import ---------------------------------------------------------------------------------------------------------
def _load_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All weights of a Hugging Face folder: safetensors (single or sharded), else pytorch_model.bin without
    unpickling arbitrary objects (weights_only)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd: dict[str, torch.Tensor] = {}
        for s in shards:
            sd |= load_file(str(folder / s))
        return sd
    if (folder / "model.safetensors").exists():
        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _spm_model_type(path: Path) -> str:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return {1: "unigram", 2: "bpe"}.get(proto.trainer_spec.model_type, "unigram")


def _import_tokenizer(hf_dir: Path, dest: Path, mc) -> dict:
    """Copy the Marian tokenizer files into a lucidmt tokenizer folder; returns tokenizer_config.json."""
    tcfg_path = hf_dir / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text(encoding="utf-8")) if tcfg_path.exists() else {}
    if tcfg.get("separate_vocabs") or (hf_dir / "target_vocab.json").exists():
        raise ConfigurationError(f"{hf_dir}: separate source/target vocabularies are not supported (one vocab.json)")
    for name in ("source.spm", "target.spm", "vocab.json"):
        if not (hf_dir / name).exists():
            raise CheckpointError(
                f"{hf_dir}: missing {name} (a MarianTokenizer folder has source.spm, target.spm, vocab.json)"
            )
    vocab = json.loads((hf_dir / "vocab.json").read_text(encoding="utf-8"))
    unk = tcfg.get("unk_token", "<unk>")
    if isinstance(unk, dict):
        unk = unk.get("content", "<unk>")
    if unk not in vocab:
        raise CheckpointError(f"{hf_dir}/vocab.json: no {unk!r} entry")
    size = max(vocab.values()) + 1
    if size > mc.src_vocab_size:
        raise CheckpointError(f"{hf_dir}/vocab.json has ids up to {size - 1} but the model has {mc.src_vocab_size}")
    dest.mkdir(parents=True)
    for name in ("source.spm", "target.spm", "vocab.json"):
        shutil.copyfile(hf_dir / name, dest / name)
    mc.unk_id = vocab[unk]
    info = TokenizerInfo(
        src_model="source.spm",
        tgt_model="target.spm",
        vocab="vocab.json",
        model_type=_spm_model_type(hf_dir / "source.spm"),
        pad_id=mc.pad_id,
        unk_id=mc.unk_id,
        bos_id=mc.bos_id,
        eos_id=mc.eos_id,
        src_vocab_size=mc.src_vocab_size,
        tgt_vocab_size=mc.tgt_vocab_size,
    )
    from dataclasses import asdict

    (dest / "tokenizer.json").write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return tcfg


def import_marian(
    hf_dir: str | Path,
    out: str | Path,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    verify: bool = True,
    tolerance: float = 1e-3,
) -> Path:
    """Convert a local MarianMTModel folder (config.json, weights, source.spm, target.spm, vocab.json) into a lucidmt
    run folder, OUT/best/ being its checkpoint. With `verify` (and transformers installed), the Hugging Face model
    is loaded and must give the same logits on a probe batch before anything is written."""
    from ..train.checkpoint import save_checkpoint

    transformers = _require_transformers()
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").exists():
        raise CheckpointError(f"{hf_dir}: no config.json (expected a Hugging Face model folder)")
    try:
        hc = transformers.AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{hf_dir}/config.json: {exc}") from None
    cfg = RunConfig()
    mc = model_config_from_hf(hc, cfg.model)
    weights = _load_hf_weights(hf_dir)
    state = from_hf_state(weights, mc)
    model = Seq2Seq(mc).eval()
    result = model.load_state_dict(state, strict=False)
    aliases = {"decoder.embed.tokens.weight"} if mc.share_embeddings else set()
    missing = [k for k in result.missing_keys if k not in aliases]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{hf_dir}: weights do not fit (missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    for k, v in state.items():
        if v.shape != model.state_dict()[k].shape:
            raise CheckpointError(
                f"{hf_dir}: {k} has shape {tuple(v.shape)}, expected {tuple(model.state_dict()[k].shape)}"
            )
    diff = None
    if verify:
        cls = getattr(transformers, ARCHITECTURES[hc.model_type])
        hf = cls.from_pretrained(str(hf_dir), local_files_only=True).eval()
        diff = _check(model, hf, f"import of {hf_dir}", tolerance)
        del hf
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        tcfg = _import_tokenizer(hf_dir, tmp / "staging-tokenizer", mc)
        cfg.data.src_lang = src_lang or tcfg.get("source_lang") or ""
        cfg.data.tgt_lang = tgt_lang or tcfg.get("target_lang") or ""
        cfg.model = mc
        cfg.validate()
        tok = Tokenizer(tmp / "staging-tokenizer")
        save_checkpoint(tmp / "best", model, cfg, tok)
        shutil.rmtree(tmp / "staging-tokenizer")
        write_json(
            tmp / "import.json",
            {
                "source": str(hf_dir.resolve()),
                "architecture": ARCHITECTURES[hc.model_type],
                "max_logit_difference": diff,
            }
            | {"lucidmt_version": __version__},
        )
    return out
