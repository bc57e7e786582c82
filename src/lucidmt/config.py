"""Typed configuration: model architecture, training recipe and data location.

One `RunConfig` is resolved from a preset, an optional YAML file and `key=value` overrides, then saved
(with a comment above every field) into every run folder and checkpoint, so that a checkpoint always says
exactly how it was built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigurationError

CONFIG_VERSION = 1


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A field with a help text (written as a YAML comment) and, optionally, its allowed values."""
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Architecture of the encoder-decoder Transformer."""

    src_vocab_size: int = _f(8000, "source vocabulary size (set by `prepare`)")
    tgt_vocab_size: int = _f(8000, "target vocabulary size (set by `prepare`)")
    d_model: int = _f(256, "width of every residual stream")
    n_heads: int = _f(4, "attention heads; d_model must divide by it")
    encoder_layers: int = _f(3, "encoder blocks")
    decoder_layers: int = _f(3, "decoder blocks")
    ffn_dim: int = _f(1024, "inner width of the feed-forward layers")
    dropout: float = _f(0.1, "dropout on embeddings and residual branches")
    attention_dropout: float = _f(0.0, "dropout on attention probabilities")
    activation_dropout: float = _f(0.0, "dropout after the feed-forward activation")
    activation: str = _f("relu", "feed-forward activation", ("relu", "gelu", "swish"))
    norm: str = _f("pre", "layer-norm placement: pre (stable) or post (original paper, Marian)", ("pre", "post"))
    positions: str = _f("sinusoidal", "position encoding", ("sinusoidal", "learned"))
    max_positions: int = _f(512, "longest sequence the model accepts, in subwords")
    share_embeddings: bool = _f(True, "one embedding table for source and target (needs a joint vocabulary)")
    tie_output: bool = _f(True, "output projection shares the target embedding matrix")
    scale_embeddings: bool = _f(True, "multiply token embeddings by sqrt(d_model)")
    final_logits_bias: bool = _f(False, "a learned bias on the output logits (Marian models have one)")
    layer_norm_eps: float = _f(1e-5, "epsilon of every LayerNorm")
    pad_id: int = _f(0, "padding token id")
    unk_id: int = _f(1, "unknown token id")
    bos_id: int = _f(2, "first decoder input token (Marian uses the pad id)")
    eos_id: int = _f(3, "end-of-sentence token id")

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigurationError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigurationError(
                "model.share_embeddings=true needs equal vocabularies, got "
                f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}"
            )
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ConfigurationError("sinusoidal positions need an even model.d_model")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigurationError(f"model.{name}={v} must be in [0, 1)")


@dataclass
class TrainConfig:
    """The training recipe."""

    lr: float = _f(1e-3, "peak learning rate")
    schedule: str = _f("inverse_sqrt", "learning-rate schedule after warm-up", ("inverse_sqrt", "cosine", "constant"))
    warmup_steps: int = _f(1000, "linear warm-up steps")
    min_lr: float = _f(1e-5, "floor of the cosine schedule")
    betas: list = _f([0.9, 0.98], "AdamW betas")
    weight_decay: float = _f(0.0001, "AdamW decoupled weight decay (not applied to norms and biases)")
    clip_norm: float = _f(1.0, "gradient clipping by global norm (0 disables)")
    label_smoothing: float = _f(0.1, "label smoothing of the cross-entropy")
    max_tokens: int = _f(4096, "token budget of one batch (padded, the longer side counts)")
    accum_steps: int = _f(1, "batches whose gradients are summed before one optimizer step")
    max_steps: int = _f(0, "stop after this many optimizer steps (0: no limit)")
    max_epochs: int = _f(0, "stop after this many epochs (0: no limit)")
    max_minutes: float = _f(0.0, "stop after this much wall-clock training time (0: no limit)")
    valid_every: int = _f(500, "validate (and checkpoint) every N steps; also at the end")
    valid_bleu: bool = _f(True, "decode the validation set greedily and report BLEU")
    valid_max_sentences: int = _f(0, "decode at most this many validation sentences for BLEU (0: all)")
    early_stop_metric: str = _f("bleu", "metric that picks the best checkpoint", ("bleu", "loss"))
    patience: int = _f(0, "stop when the metric has not improved for N validations (0: never)")
    keep_last: int = _f(5, "checkpoints kept besides the best one")
    subword_alpha: float = _f(0.0, "subword regularisation: l-best sampling alpha, unigram tokenizers (0: off)")
    seed: int = _f(1, "seed of initialisation, batch order and dropout")
    init_from: str = _f("", "fine-tune: start from this checkpoint's weights (the model section must match it)")
    compile: bool = _f(False, "torch.compile the model")
    parallel: str = _f(
        "ddp",
        "with several processes (torchrun): ddp replicates the model; fsdp shards parameters, gradients and "
        "optimizer state over the ranks (one unit per layer)",
        ("ddp", "fsdp"),
    )
    amp: str = _f("auto", "mixed precision: auto (bf16 on CUDA, fp32 on CPU), bf16, fp32", ("auto", "bf16", "fp32"))
    threads: int = _f(0, "CPU threads for torch (0: torch's default)")
    log_every: int = _f(50, "write training metrics every N steps")


@dataclass
class DataConfig:
    """Where the prepared data lives and which direction the model translates."""

    path: str = _f("", "prepared data folder (written by `lucidmt prepare`)")
    src_lang: str = _f("", "source language code")
    tgt_lang: str = _f("", "target language code")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    version: int = CONFIG_VERSION

    def validate(self) -> None:
        self.model.validate()
        for sec in (self.model, self.train, self.data):
            for f in dataclasses.fields(sec):
                _check_choice(f, getattr(sec, f.name), _section_name(sec))

    # -- YAML --------------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        """YAML with a comment above each field, readable as documentation of the run."""
        out = [f"# lucidmt run configuration\nversion: {self.version}\n"]
        for sec in (self.model, self.train, self.data):
            out.append(f"\n# {type(sec).__doc__}\n{_section_name(sec)}:\n")
            for f in dataclasses.fields(sec):
                help_ = f.metadata.get("help", "")
                if "choices" in f.metadata:
                    help_ += f" [{' | '.join(f.metadata['choices'])}]"
                value = yaml.safe_dump(getattr(sec, f.name), default_flow_style=True).strip()
                value = value.removesuffix("\n...").removesuffix("...").strip()
                out.append(f"  # {help_}\n  {f.name}: {value}\n")
        return "".join(out)

    def save(self, path: str | Path) -> None:
        from .io import write_text

        write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, d: dict, source: str = "configuration") -> RunConfig:
        cfg = cls()
        cfg.update(d, source)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        cfg = cls.from_dict(read_config_dict(path), str(path))
        cfg.validate()
        return cfg

    def update(self, d: dict, source: str = "configuration") -> None:
        for key, value in d.items():
            sec = getattr(self, key, None) if key in ("model", "train", "data") else None
            if sec is None:
                raise ConfigurationError(f"{source}: unknown section {key!r} (expected model, train or data)")
            if not isinstance(value, dict):
                raise ConfigurationError(f"{source}: section {key!r} must be a mapping")
            for k, v in value.items():
                _set_field(sec, k, v, f"{source}: {key}")

    def apply_overrides(self, overrides: list[str]) -> None:
        """Apply `section.key=value` (or unambiguous `key=value`) strings from the command line."""
        for item in overrides:
            if "=" not in item:
                raise ConfigurationError(f"override {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            sec_name, _, name = key.rpartition(".")
            if sec_name:
                sec = getattr(self, sec_name, None) if sec_name in ("model", "train", "data") else None
                if sec is None:
                    raise ConfigurationError(f"override {item!r}: unknown section {sec_name!r}")
            else:
                owners = [s for s in (self.model, self.train, self.data) if name in _field_names(s)]
                if len(owners) > 1:
                    raise ConfigurationError(f"override {item!r} is ambiguous; write model.{name} or train.{name}")
                sec = owners[0] if owners else self.train  # unknown names fail in _set_field with a hint
            _set_field(sec, name, yaml.safe_load(raw) if raw else "", f"override: {_section_name(sec)}")


def read_config_dict(path: str | Path) -> dict:
    """A YAML configuration file as a dict, with its version checked and removed."""
    path = Path(path)
    if not path.exists():
        raise ConfigurationError(f"{path}: no such configuration file")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(d, dict):
        raise ConfigurationError(f"{path}: expected a mapping at the top level")
    version = d.pop("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigurationError(f"{path}: configuration version {version} is unsupported (expected {CONFIG_VERSION})")
    return d


def _section_name(sec: Any) -> str:
    return {ModelConfig: "model", TrainConfig: "train", DataConfig: "data"}[type(sec)]


def _field_names(sec: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(sec)]


def _set_field(sec: Any, name: str, value: Any, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(sec)}
    if name not in fields:
        all_names = [n for s in (ModelConfig, TrainConfig, DataConfig) for n in _field_names(s)]
        close = difflib.get_close_matches(name, all_names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(f"{where}: unknown field {name!r}{hint}")
    value = _coerce(value, fields[name], f"{where}.{name}")
    _check_choice(fields[name], value, where)  # here too, so that the message names the file (or the override)
    setattr(sec, name, value)


def _check_choice(f: dataclasses.Field, value: Any, where: str) -> None:
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigurationError(f"{where}.{f.name}={value!r}: expected one of {', '.join(choices)}")


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    typ = f.type if not isinstance(f.type, str) else _TYPE_NAMES.get(f.type, Any)
    if typ in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads "5e-4" as a string
            value = float(value)
    if isinstance(typ, types.GenericAlias) or typ is list:
        if not isinstance(value, list):
            raise ConfigurationError(f"{where}: expected a list, got {value!r}")
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigurationError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigurationError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigurationError(f"{where}: expected a string, got {value!r}")
        return value
    return value


_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "list": list}


# -- Presets ---------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=128),  # tests only
    "small": dict(d_model=256, n_heads=4, encoder_layers=3, decoder_layers=3, ffn_dim=1024),
    "base": dict(d_model=512, n_heads=8, encoder_layers=6, decoder_layers=6, ffn_dim=2048),
    "big": dict(d_model=1024, n_heads=16, encoder_layers=6, decoder_layers=6, ffn_dim=4096),
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigurationError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = RunConfig()
    for k, v in PRESETS[name].items():
        setattr(cfg.model, k, v)
    return cfg
