from pathlib import Path

import pytest

from lucidmt.config import RunConfig, preset
from lucidmt.errors import ConfigurationError


def test_yaml_round_trip_with_comments(tmp_path):
    cfg = preset("base")
    cfg.apply_overrides(["lr=5e-4", "model.dropout=0.3", "betas=[0.9, 0.99]", "train.schedule=cosine"])
    cfg.save(tmp_path / "c.yaml")
    text = (tmp_path / "c.yaml").read_text()
    assert "version: 1" in text and "# peak learning rate" in text
    again = RunConfig.load(tmp_path / "c.yaml")
    assert again == cfg and again.train.lr == 5e-4 and again.model.d_model == 512


@pytest.mark.parametrize(
    "override, message",
    [
        ("dropot=0.1", "did you mean 'dropout'"),
        ("train.amp=fp16", "override: train.amp='fp16': expected one of auto, bf16, fp32"),
        ("model.d_model=abc", "override: model.d_model: expected an integer"),
        ("nothing", "key=value"),
        ("model.n_heads=3", "not divisible"),
        ("optim.lr=1", "unknown section"),
        ("valid_bleu=maybe", "expected true or false"),
    ],
)
def test_bad_overrides_are_named(override, message):
    cfg = preset("small")
    with pytest.raises(ConfigurationError, match=message):
        cfg.apply_overrides([override])
        cfg.validate()


def test_bad_yaml_files(tmp_path):
    (tmp_path / "v.yaml").write_text("version: 7\n")
    with pytest.raises(ConfigurationError, match="version 7"):
        RunConfig.load(tmp_path / "v.yaml")
    (tmp_path / "t.yaml").write_text("train:\n  lr: [1, 2]\n")
    with pytest.raises(ConfigurationError, match=r"t.yaml: train.lr: expected a number"):
        RunConfig.load(tmp_path / "t.yaml")
    (tmp_path / "s.yaml").write_text("train:\n  schedule: cosin\n")
    with pytest.raises(ConfigurationError, match=r"s.yaml: train.schedule='cosin': expected one of inverse_sqrt"):
        RunConfig.load(tmp_path / "s.yaml")
    with pytest.raises(ConfigurationError, match="no such configuration"):
        RunConfig.load(tmp_path / "missing.yaml")


def test_unknown_preset():
    with pytest.raises(ConfigurationError, match="small, base, big"):
        preset("huge")


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_apply_to_the_small_preset(recipe, tmp_path):
    """Each recipe resolves as `lucidmt train --preset small --config RECIPE` resolves it: unknown keys, bad values
    and values outside a field's choices raise, naming the file or the field."""
    from lucidmt.cli import build_parser, resolve_train_config

    a = build_parser().parse_args(["train", "--data", "-", "--out", str(tmp_path), "--preset", "small",
                                   "--config", str(recipe)])  # fmt: skip
    cfg = resolve_train_config(a)
    assert cfg.train.lr > 0 and cfg.train.max_tokens > 0
