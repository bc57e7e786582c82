import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from lucidmt.errors import ConfigurationError
from lucidmt.train.checkpoint import average_checkpoints, list_checkpoints, load_checkpoint, load_train_state
from lucidmt.train.schedule import learning_rate
from lucidmt.train.trainer import train

QUIET = dict(progress=False, log=lambda *_: None)


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "lucidmt", *args], capture_output=True, text=True, env=env, **kw)


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_run_folder_contents_and_metrics(prepared, tmp_path):
    cfg = tiny_config(max_steps=30, valid_every=10, log_every=5)
    res = train(prepared, tmp_path / "run", cfg, **QUIET)
    run = tmp_path / "run"
    assert res.steps == 30 and res.stopped_by == "max_steps"
    for name in ("config.yaml", "metrics.jsonl", "learning_curve.png", "train_summary.json", "best/model.safetensors"):
        assert (run / name).exists(), name
    assert [p.name for p in list_checkpoints(run)] == ["step-0000020", "step-0000030"]  # keep_last=2
    ck = list_checkpoints(run)[-1]
    assert {p.name for p in ck.iterdir()} == {"config.yaml", "model.safetensors", "tokenizer", "train_state.pt"}
    state = torch.load(ck / "train_state.pt", weights_only=True)  # no pickle needed
    assert state["step"] == 30
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train_loss" in r]
    valid_rows = [r for r in rows if "valid_nll" in r]
    assert len(train_rows) == 6 and len(valid_rows) == 3
    assert train_rows[-1]["train_nll"] < train_rows[0]["train_nll"]
    assert all(r["valid_bleu"] is not None for r in valid_rows)
    # each window's time inside training steps: positive, all of them less than the run's clock (validation and
    # checkpoints are outside), and the very time behind tokens/s, so that their product is a whole number of tokens
    assert all(r["step_seconds"] > 0 for r in train_rows)
    assert sum(r["step_seconds"] for r in train_rows) < valid_rows[-1]["elapsed_min"] * 60
    tokens = [r["tgt_tokens_per_s"] * r["step_seconds"] for r in train_rows]
    assert all(n >= 1 and n == pytest.approx(round(n), rel=1e-9) for n in tokens)
    assert list((run / "tensorboard").iterdir())


def test_time_between_steps_is_not_counted(prepared, tmp_path):
    """`between_steps` runs after every step but the last; its time stays out of the run's clock, and the run
    trains exactly as it does without it."""
    seen, nap = [], 0.5

    def between(step):
        seen.append(step)
        time.sleep(nap)

    cfg = tiny_config(max_steps=6, valid_every=3, log_every=2)
    t0 = time.perf_counter()
    res = train(prepared, tmp_path / "paused", cfg, between_steps=between, **QUIET)
    wall = time.perf_counter() - t0
    assert seen == [1, 2, 3, 4, 5] and res.steps == 6
    assert res.elapsed_minutes * 60 <= wall - nap * len(seen)
    rows = [json.loads(x) for x in (tmp_path / "paused" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["elapsed_min"] for r in rows) * 60 < nap * len(seen)  # the tiny run itself: well under 2.5 s
    plain = train(prepared, tmp_path / "plain", tiny_config(max_steps=6, valid_every=3, log_every=2), **QUIET)
    assert plain.steps == 6
    a, b = weights(tmp_path / "paused" / "best"), weights(tmp_path / "plain" / "best")
    assert all(torch.equal(a[k], b[k]) for k in a)
    seen.clear()  # an epoch budget ends the run too: no call after its last step either
    nap = 0.0
    epoch = train(prepared, tmp_path / "epoch", tiny_config(max_epochs=1), between_steps=between, **QUIET)
    assert epoch.stopped_by == "max_epochs" and seen == list(range(1, epoch.steps))


def test_existing_run_folder_is_not_overwritten(prepared, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("precious")
    with pytest.raises(ConfigurationError, match="--resume"):
        train(prepared, tmp_path / "run", tiny_config(max_steps=1), **QUIET)
    assert (tmp_path / "run" / "keep.txt").read_text() == "precious"


def test_kill_and_resume_gives_identical_weights(toy_files, tmp_path):
    """A run SIGKILLed mid-way and resumed ends bit-identical to an uninterrupted one (with dropout and
    subword sampling on, so that RNG state and the data position both have to be restored)."""
    prep = tmp_path / "unigram"
    made = run_cli(
        "prepare",
        "--train-src",
        str(toy_files["train.en"]),
        "--train-tgt",
        str(toy_files["train.de"]),
        "--valid-src",
        str(toy_files["valid.en"]),
        "--valid-tgt",
        str(toy_files["valid.de"]),
        "--src",
        "en",
        "--tgt",
        "de",
        "--vocab-size",
        "60",
        "--model-type",
        "unigram",
        "--out",
        str(prep),
    )
    assert made.returncode == 0, made.stderr
    args = [
        "train",
        "--data",
        str(prep),
        "--preset",
        "tiny",
        "--no-progress",
        "--max-steps",
        "150",
        "valid_every=15",
        "log_every=5",
        "max_tokens=250",
        "lr=3e-3",
        "warmup_steps=10",
        "keep_last=3",
        "model.dropout=0.2",
        "valid_max_sentences=5",
        "subword_alpha=0.1",
    ]  # noqa: E128
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "lucidmt", *args, "--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "killed" / "checkpoints" / "step-0000045").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    done = [p.name for p in list_checkpoints(tmp_path / "killed")]
    assert done and done[-1] != "step-0000150"

    resumed = run_cli("train", "--data", str(prep), "--out", str(tmp_path / "killed"), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    final = Path("checkpoints") / "step-0000150"
    a, b = weights(tmp_path / "ref" / final), weights(tmp_path / "killed" / final)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_early_stopping_on_validation_loss(prepared, tmp_path):
    cfg = tiny_config(max_steps=500, valid_every=5, patience=2, early_stop_metric="loss", lr=0.5, warmup_steps=1)
    res = train(prepared, tmp_path / "run", cfg, **QUIET)  # a learning rate this high diverges quickly
    assert res.stopped_by == "early stopping" and res.steps < 500
    assert res.steps - res.best_step == 2 * 5


def test_average_checkpoints(prepared, tmp_path):
    train(prepared, tmp_path / "run", tiny_config(max_steps=20, valid_every=10, keep_last=2), **QUIET)
    ckpts = list_checkpoints(tmp_path / "run")
    out = average_checkpoints(ckpts, tmp_path / "avg")
    a, b, avg = weights(ckpts[0]), weights(ckpts[1]), weights(out)
    for k in avg:
        torch.testing.assert_close(avg[k], (a[k] + b[k]) / 2)
    model, cfg, tok = load_checkpoint(out)
    assert cfg.model.d_model == 64 and tok.info.src_vocab_size > 0
    assert not (out / "train_state.pt").exists()


def torchrun(args: list[str], port: int, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
    return subprocess.run([*cmd, "-m", "lucidmt", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_equal_gradient_accumulation(prepared, tmp_path, parallel):
    """2 gloo ranks each taking every other batch = 1 process accumulating 2 batches per step, whether the ranks
    replicate the model (DDP) or shard it (FSDP). FSDP also resumes: a run stopped at step 2 and resumed ends at
    step 4 with the weights of the uninterrupted run."""
    common = ["--data", str(prepared), "--preset", "tiny", "--no-progress"]  # options, then the overrides
    overrides = ["model.dropout=0", "valid_bleu=false", "max_tokens=200", "seed=3", "valid_every=2"]
    overrides.append(f"parallel={parallel}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    port = 29533 if parallel == "ddp" else 29543
    dist = torchrun(["train", *common, "--max-steps", "4", "--out", str(tmp_path / "dist"), *overrides], port, env)
    assert dist.returncode == 0, dist.stderr[-3000:]
    single = run_cli("train", *common, "--max-steps", "4", "--out", str(tmp_path / "single"), *overrides,
                     "accum_steps=2", env=env)  # fmt: skip
    assert single.returncode == 0, single.stderr
    a = weights(tmp_path / "dist" / "checkpoints" / "step-0000004")
    b = weights(tmp_path / "single" / "checkpoints" / "step-0000004")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)
    summary = json.loads((tmp_path / "dist" / "train_summary.json").read_text())
    assert summary["steps"] == 4
    assert (tmp_path / "dist" / "best" / "model.safetensors").exists()
    if parallel == "fsdp":
        share = re.search(r"fsdp: rank 0 holds [\d,]+ parameter elements \((\d+)%\)", dist.stdout + dist.stderr)
        assert share and 45 <= int(share.group(1)) <= 55, dist.stdout[-2000:]  # half of each tensor, rounded up
        cut = ["train", *common, "--max-steps", "2", "--out", str(tmp_path / "cut"), *overrides]
        first = torchrun(cut, port + 1, env)
        assert first.returncode == 0, first.stderr[-3000:]
        resumed = torchrun(["train", "--data", str(prepared), "--out", str(tmp_path / "cut"), "--resume",
                            "--no-progress", "--max-steps", "4"], port + 2, env)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        c = weights(tmp_path / "cut" / "checkpoints" / "step-0000004")
        for k in a:
            assert torch.equal(a[k], c[k]), k
        # the sharded run's checkpoint also resumes in one process (optimizer state by name -> by position), and a
        # one-process checkpoint under FSDP (by position -> by name)
        one = run_cli("train", "--data", str(prepared), "--out", str(tmp_path / "cut"), "--resume", "--max-steps", "6")
        assert one.returncode == 0, one.stderr
        back = ["train", "--data", str(prepared), "--out", str(tmp_path / "cut"), "--resume", "--no-progress"]
        back = torchrun([*back, "--max-steps", "8"], port + 3, env)
        assert back.returncode == 0, back.stderr[-3000:]
        assert json.loads((tmp_path / "cut" / "train_summary.json").read_text())["steps"] == 8


def test_optimizer_state_converts_between_positions_and_names(prepared, tmp_path):
    """How a one-process checkpoint resumes under FSDP and back: the optimizer state re-keyed by parameter name
    (as FSDP saves it) and back to positions gives the same state."""
    from lucidmt.data.prepare import Prepared
    from lucidmt.train.trainer import Trainer

    tr = Trainer(tiny_config(max_steps=2, valid_every=2), Prepared(prepared), tmp_path / "r", **QUIET)
    tr.fit()
    st = tr.optimizer.state_dict()
    named = tr._names(st)
    assert set(named["state"]) == {n for n, _ in tr.model.named_parameters()}
    assert named["state"]["encoder.embed.tokens.weight"]["exp_avg"].shape == tr.model.encoder.embed.tokens.weight.shape
    back = tr._positions(named)
    assert back["param_groups"] == st["param_groups"]
    for i, v in st["state"].items():
        assert all(torch.equal(back["state"][i][k], v[k]) for k in ("exp_avg", "exp_avg_sq", "step"))


def test_average_select_chooses_on_validation(memorised, tmp_path, capsys):
    """--select scores best, last and the averages on the run's validation set and keeps the winner: with an
    untrained checkpoint among the last three, the 3-average scores low and is not chosen; the output holds the
    winner's weights and the report."""
    import shutil

    from lucidmt.cli import main
    from lucidmt.model import Seq2Seq
    from lucidmt.train.checkpoint import save_checkpoint
    from lucidmt.train.select import candidates, select_checkpoint

    run = tmp_path / "run"
    shutil.copytree(memorised[0], run)
    steps = list_checkpoints(run)
    assert len(steps) == 2
    model, cfg, tok = load_checkpoint(steps[-1])
    torch.manual_seed(0)
    save_checkpoint(run / "checkpoints" / "step-0000001", Seq2Seq(cfg.model), cfg, tok)  # the oldest: untrained
    report = select_checkpoint(run, tmp_path / "out", last=3, log=lambda *_: None)
    scores = {c["candidate"]: c["valid_bleu"] for c in report["candidates"]}
    assert list(scores) == ["best", f"last ({steps[-1].name})", "average of the last 2", "average of the last 3"]
    assert scores["average of the last 3"] < scores["best"] - 20  # the untrained checkpoint drags it down
    assert scores[report["chosen"]] == max(scores.values()) and report["chosen"] != "average of the last 3"
    got = weights(tmp_path / "out")
    folders = dict(candidates(run, 3))[report["chosen"]]  # the winner's checkpoints: one, or the averaged ones
    want = weights(folders[0] if len(folders) == 1 else average_checkpoints(folders, tmp_path / "expected"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], v) for k, v in want.items())
    assert json.loads((tmp_path / "out" / "selection.json").read_text()) == report
    assert not (tmp_path / "out" / "train_state.pt").exists()
    assert main(["average", str(run), "--last", "2", "--select", "--beam", "1", "--out", str(tmp_path / "o2")]) == 0
    assert "valid BLEU" in capsys.readouterr().out and (tmp_path / "o2" / "selection.json").exists()
    assert main(["average", str(run), "--select", "--checkpoints", str(steps[0])]) == 1


def test_learning_rate_schedules():
    cfg = tiny_config(lr=1e-3, warmup_steps=100).train
    assert learning_rate(50, cfg) == pytest.approx(5e-4)
    assert learning_rate(100, cfg) == pytest.approx(1e-3)
    assert learning_rate(400, cfg) == pytest.approx(5e-4)  # inverse square root
    cfg.schedule, cfg.max_steps, cfg.min_lr = "cosine", 1100, 0.0
    assert learning_rate(600, cfg) == pytest.approx(5e-4)
    assert learning_rate(1100, cfg) == pytest.approx(0.0)
    cfg.max_steps, cfg.max_minutes = 0, 10.0  # anneal over a time budget
    assert learning_rate(200, cfg, elapsed_s=300) == pytest.approx(5e-4)
    assert learning_rate(200, cfg, elapsed_s=600) == pytest.approx(0.0)
    # the warm-up took 100 s: the decay runs over the 500 s left, from the peak
    assert learning_rate(100, cfg, elapsed_s=100, warmup_s=100) == pytest.approx(1e-3)
    assert learning_rate(200, cfg, elapsed_s=350, warmup_s=100) == pytest.approx(5e-4)
    assert learning_rate(300, cfg, elapsed_s=600, warmup_s=100) == pytest.approx(0.0)
    assert learning_rate(300, cfg, elapsed_s=700, warmup_s=700) == pytest.approx(0.0)  # no time left after warm-up


def test_subword_sampling_is_seeded_and_needs_unigram(prepared, toy_files, tmp_path):
    import numpy as np

    from lucidmt.data.corpus import read_parallel
    from lucidmt.data.prepare import Prepared, PrepareOptions, prepare

    data = read_parallel(toy_files["train.en"], toy_files["train.de"])
    prepare(data, data, tmp_path / "u", PrepareOptions("en", "de", vocab_size=60, model_type="unigram"), log=print)
    tok = Prepared(tmp_path / "u").tokenizer
    text = data.src[:50]
    a = tok.sample_src(text, 0.5, np.random.default_rng(1))
    b = tok.sample_src(text, 0.5, np.random.default_rng(1))
    c = tok.sample_src(text, 0.5, np.random.default_rng(2))
    assert a == b and a != c
    assert [tok.src.decode(x) for x in c] == text  # every sample is a segmentation of the same text
    with pytest.raises(ConfigurationError, match="unigram"):
        Prepared(prepared).tokenizer.sample_src(text, 0.5, np.random.default_rng(1))


def test_time_budget_stops_training(prepared, tmp_path):
    # 1.2 seconds, a cosine schedule annealed over the time left after a 2-step warm-up
    cfg = tiny_config(max_minutes=0.02, valid_every=10_000, schedule="cosine", warmup_steps=2, log_every=1)
    res = train(prepared, tmp_path / "run", cfg, **QUIET)
    assert res.stopped_by == "max_minutes" and res.steps > 2
    assert list_checkpoints(tmp_path / "run")  # the end of the budget validates and checkpoints
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert lrs[1] == cfg.train.lr  # the decay starts at the peak, however long the warm-up took
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False)) and lrs[-1] < 0.2 * cfg.train.lr
    state = load_train_state(list_checkpoints(tmp_path / "run")[-1])
    assert 0 < state["warmup_s"] < state["elapsed"]


def _rank_with_own_clock(rank: int, port: int, prepared: str, out: str, speed: float) -> None:
    """One DDP rank of `test_ranks_share_rank0_clock`: rank 1's clock runs `speed` times as fast as rank 0's."""
    import types

    from safetensors.torch import save_file

    from lucidmt.data.prepare import Prepared
    from lucidmt.train import trainer as trainer_module

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)
    if rank == 1:
        trainer_module.time = types.SimpleNamespace(perf_counter=lambda: speed * time.perf_counter())
    cfg = tiny_config(max_minutes=0.02, valid_every=10_000, valid_bleu=False, schedule="cosine", warmup_steps=2)
    tr = trainer_module.Trainer(cfg, Prepared(prepared), out, device="cpu", progress=False, log=lambda *_: None)
    try:
        result = tr.fit()
        state = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
        state["steps"] = torch.tensor(result.steps)
        save_file(state, str(Path(out).parent / f"rank{rank}.safetensors"))
    finally:
        tr.dist.close()


def test_ranks_share_rank0_clock(prepared, tmp_path):
    """Under DDP a time-budgeted cosine takes its clock from rank 0 on every rank, and rank 0 decides when the
    budget is spent: with rank 1's clock running 3x as fast, both replicas still end identical, after the same
    number of steps (a rank reading its own clock would take other learning rates and stop at another step)."""
    import torch.multiprocessing as mp

    args = (29563, str(prepared), str(tmp_path / "run"), 3.0)
    ctx = mp.spawn(_rank_with_own_clock, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:  # ranks that disagree on when to stop wait for each other forever
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish within 60 s")
    a, b = (load_file(str(tmp_path / f"rank{rank}.safetensors")) for rank in (0, 1))
    assert a["steps"] == b["steps"] and int(a["steps"]) > 2
    for k in a:
        assert torch.equal(a[k], b[k]), k
