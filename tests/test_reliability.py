"""Nothing lost, nothing silently wrong: faults and bad input for the trainer, the run folders, the loaders and
the command lines. Each test names the defect it guards against (the numbers of the reliability table in the
README)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mopoe_lib import runs
from mopoe_lib.config import get_config
from mopoe_lib.integrity import DataError, sha256_file
from mopoe_lib.runs import CheckpointError, NonFiniteError, latest_checkpoint, rebuild_model
from mopoe_lib.train import train

TINY = dict(train_subset=256, batch_size=64, latent_dim=8, epochs=3, eval_samples=64, eval_coherence=0)


def _config(**extra):
    return get_config("polymnist-fast-mopoe", **{**TINY, **extra})


def _cli(module: str, argv: list[str], capsys) -> tuple[int, str]:
    """Run a command line in this process; returns its exit status and what it printed on stderr."""
    import importlib

    status = importlib.import_module(f"mopoe_lib.{module}.__main__" if module != "pretrained" else
                                     "mopoe_lib.pretrained").main(argv)
    return status, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 1. NaN models


def test_1_parameters_that_become_non_finite_are_never_checkpointed(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="lr must be a finite positive number"):
        _config(lr=float("inf"))
    real_step, calls = torch.optim.Adam.step, {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third optimiser step makes a weight NaN
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned)
    with pytest.raises(NonFiniteError, match="not finite at step 3"):
        train(_config(checkpoint_every_steps=1), tmp_path / "run", progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "step-00000002"
    rebuild_model(tmp_path / "run")  # the last checkpoint is good


# ---------------------------------------------------------------------------- 2-4. the pointer and pruning


def test_2_a_lost_pointer_resumes_from_the_newest_checkpoint_not_from_scratch(tmp_path):
    run = tmp_path / "run"
    train(_config(checkpoint_every_steps=1), run, progress=False)  # 12 steps
    (run / "checkpoints" / "latest.json").unlink()
    assert latest_checkpoint(run).name == "step-00000012"
    resumed = train(_config(checkpoint_every_steps=1, epochs=4), run, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3, 4] and resumed.metrics[-1]["global_step"] == 16
    again = train(_config(checkpoint_every_steps=1, epochs=5), run, resume=True, progress=False)
    assert again.metrics[-1]["global_step"] == 20


def test_3_a_crash_between_the_checkpoint_and_its_pointer_leaves_a_usable_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_config(epochs=1), run, progress=False)
    first = latest_checkpoint(run)
    real = runs.write_json

    def crash_at_pointer(path, obj):
        if Path(path).name == "latest.json":
            raise KeyboardInterrupt("killed before the pointer moved")
        return real(path, obj)

    monkeypatch.setattr(runs, "write_json", crash_at_pointer)
    with pytest.raises(KeyboardInterrupt):
        train(_config(epochs=2), run, resume=True, progress=False)
    monkeypatch.setattr(runs, "write_json", real)
    assert latest_checkpoint(run) == first  # the pointer still names a complete checkpoint
    train(_config(epochs=2), run, resume=True, progress=False)
    # the same step saved twice gets a new name: the first folder is never replaced
    weights = {k: v for k, v in rebuild_model(run)[0].state_dict().items()}
    optimizer = torch.optim.Adam(torch.nn.Linear(1, 1).parameters())
    progress = json.loads((latest_checkpoint(run) / "state.json").read_text())["progress"]
    before = latest_checkpoint(run)
    inode, names = before.stat().st_ino, {p.name for p in runs.checkpoint_folders(run)}
    again = runs.save_checkpoint(run, weights, optimizer, torch.Generator(), progress, keep=5)
    assert again.name.startswith("step-00000008.") and again.name not in names and before.stat().st_ino == inode
    assert latest_checkpoint(run) == again


def test_4_pruning_never_deletes_the_checkpoint_it_just_wrote(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1, keep_checkpoints=1), run, progress=False)
    orphan = run / "checkpoints" / "step-99999999"  # a newer name from elsewhere
    shutil.copytree(latest_checkpoint(run), orphan)
    train(_config(epochs=2, keep_checkpoints=1), run, resume=True, progress=False)
    written = latest_checkpoint(run)
    assert written.name == "step-00000008" and written.is_dir()


# ---------------------------------------------------------------------------------- 5-6. checksums


def test_5_damaged_or_non_finite_checkpoints_are_refused(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), run, progress=False)
    weights = latest_checkpoint(run) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped bit pattern in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is damaged"):
        rebuild_model(run)
    with pytest.raises(CheckpointError, match="damaged"):
        train(_config(epochs=2), run, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="damaged"):
        runs.export_run(run, "x", target=tmp_path / "shipped")


def test_5b_non_finite_weights_with_a_valid_checksum_are_refused(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), run, progress=False)
    checkpoint = latest_checkpoint(run)
    weights = load_file(str(checkpoint / "model.safetensors"))
    key = next(iter(weights))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, str(checkpoint / "model.safetensors"))
    state = json.loads((checkpoint / "state.json").read_text())
    state["sha256"]["model.safetensors"] = sha256_file(checkpoint / "model.safetensors")
    (checkpoint / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="non-finite weights"):
        rebuild_model(run)


def test_6_an_edited_config_is_refused_for_runs(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), run, progress=False)
    blob = json.loads((run / "config.json").read_text())
    blob["config"]["objective"] = "mmvae"
    (run / "config.json").write_text(json.dumps(blob))
    with pytest.raises(CheckpointError, match="config.json was edited after training"):
        rebuild_model(run)


# ------------------------------------------------------------------------------- 7-8. inputs and messages


def test_7_runs_that_cannot_take_a_step_and_negative_limits_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no full batch of batch_size=64"):
        train(_config(train_subset=32), tmp_path / "run", progress=False)
    for field in ("max_steps", "checkpoint_every_steps", "time_limit_minutes", "threads", "eval_samples"):
        with pytest.raises(ValueError, match=field):
            _config(**{field: -1})
    for field, value in (("latent_dim", 0), ("batch_size", 0), ("likelihood_scale", 0.0), ("keep_checkpoints", 0)):
        with pytest.raises(ValueError, match=field):
            _config(**{field: value})


@pytest.mark.parametrize("sets, words", [
    (["latent_dim=0"], "latent_dim must be at least 1"),
    (["epochs=abc"], "epochs expects an integer"),
    (["device=foo"], "unknown device 'foo'"),
    (["likelihood_scale=0"], "likelihood_scale must be a finite positive number"),
    (["lr=inf"], "lr must be a finite positive number"),
    (["threads=-1"], "threads must be non-negative"),
    (["objective=mmvae_iw", "num_samples=0"], "num_samples=0"),
    (["speed=3"], "unknown config fields ['speed']"),
])
def test_8_the_train_command_turns_bad_settings_into_one_line(sets, words, capsys, tmp_path):
    status, err = _cli("train", ["polymnist-fast-mopoe", "--out", str(tmp_path / "r"), *[f"--set={s}" for s in sets]],
                       capsys)
    assert status == 1 and err.startswith("error: ") and words in err and "Traceback" not in err


def test_8_missing_data_and_bad_options_of_the_other_commands_are_one_line(capsys, tmp_path, monkeypatch):
    from mopoe_lib.settings import DATA_ENV

    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    status, err = _cli("train", ["polymnist-fast-mopoe", "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert status == 1 and "python -m mopoe_lib.data polymnist --variant fast" in err
    status, err = _cli("evaluation", ["polymnist-compact-mopoe", "--test-samples", "0"], capsys)
    assert status == 1 and "test-samples must be at least 1" in err
    status, err = _cli("evaluation", ["polymnist-compact-mopoe", "--likelihood-samples", "0"], capsys)
    assert status == 1 and "likelihood-samples must be at least 1" in err
    status, err = _cli("book", ["99"], capsys)
    assert status == 1 and "no chapters matching ['99']" in err
    status, err = _cli("data", ["polymnist", "--seed", "-1"], capsys)
    assert status == 1 and "seed must be a non-negative integer" in err
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- 9. data


def test_9_prepared_data_is_ready_only_when_its_checksums_hold(data_root, capsys):
    from mopoe_lib.data.__main__ import main
    from mopoe_lib.data.polymnist import dataset_dir

    assert main(["polymnist", "--variant", "fast"]) == 0
    assert "checksums verified" in capsys.readouterr().out
    labels = dataset_dir("fast", 0, data_root) / "test_labels.npy"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 1
    labels.write_bytes(bytes(data))
    assert main(["polymnist", "--variant", "fast"]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "--force" in err
    (labels.parent / "manifest.json").write_text("{not json")
    assert main(["polymnist", "--variant", "fast"]) == 1
    assert "python -m mopoe_lib.data polymnist --variant fast --force" in capsys.readouterr().err


# -------------------------------------------------------------------------------- 10, 15. the model's API


def _model_and_batch():
    from mopoe_lib.config import build_model
    from mopoe_lib.data import load_polymnist

    torch.manual_seed(0)
    return build_model(_config()).eval(), load_polymnist("test", "fast").get_batch(torch.arange(4)).x


def test_10_subsets_are_masks_indices_or_names_never_floats():
    model, x = _model_and_batch()
    everything = model.infer(x, [0, 1, 2, 3, 4])
    for subset in (torch.arange(5), torch.ones(5, dtype=torch.bool), list(model.names)):
        torch.testing.assert_close(model.infer(x, subset), everything)
    torch.testing.assert_close(model.infer(x, torch.tensor([2])), model.infer(x, [2]))
    with pytest.raises(ValueError, match="bool mask or integer indices"):
        model.infer(x, torch.ones(5))
    with pytest.raises(ValueError, match="unknown modalities"):
        model.infer(x, ["astronaut", "moon"])


def test_15_wrong_inputs_get_a_message_not_a_torch_error_or_a_silent_result():
    from mopoe_lib.fusion import powerset, product_of_experts
    from mopoe_lib.objectives import make_objective

    model, x = _model_and_batch()
    cases = [
        ([t[:0] for t in x], "the batch is empty"),
        ([torch.nn.functional.pad(t, (2, 2, 2, 2)) for t in x], "shape (3, 32, 32)"),
        ([t * 255 for t in x], "values up to"),
        ([(t * 255).to(torch.uint8) for t in x], "to_float"),
        ([t.double() for t in x], "torch.float64"),
        ([t.clone().fill_(float("nan")) if m == 1 else t for m, t in enumerate(x)], "NaN"),
    ]
    for inputs, words in cases:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            model.encode(inputs)
    available = torch.ones(5, 4, dtype=torch.bool)
    available[:, 2] = False
    with pytest.raises(ValueError, match=r"rows \[2\] have no available modality"):
        make_objective("mopoe")(model, x, available=available)
    mu, logvar = torch.zeros(2, 1, 3), torch.zeros(2, 1, 3)
    with pytest.raises(ValueError, match="prior_expert must be a bool"):
        product_of_experts(mu, logvar, powerset(2), prior_expert=torch.tensor([0.5, 1.0, 1.0]))
    logvar[0], logvar[1] = -380.0, 380.0
    with pytest.raises(ValueError, match="differ by 760 nats"):
        product_of_experts(mu, logvar, powerset(2), prior_expert=False)


# ------------------------------------------------------------------------- 11-13. concurrency and leftovers


def test_11_a_second_trainer_on_the_same_folder_fails_at_once(tmp_path):
    run = tmp_path / "run"
    with runs.run_lock(run):
        with pytest.raises(DataError, match="another process is training into"):
            train(_config(epochs=1), run, progress=False)


def test_12_an_unwritable_folder_fails_before_any_training(tmp_path, monkeypatch, capsys):
    from mopoe_lib.objectives import Objective

    real_write = Path.write_bytes

    def full_disk(self, data):
        if self.name.startswith(".write-test-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data)

    called = []
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    monkeypatch.setattr(Objective, "__call__", lambda *a, **k: called.append(1))
    status, err = _cli("train", ["polymnist-fast-mopoe", "--out", str(tmp_path / "r"), "--no-progress",
                                 "--set=train_subset=256", "--set=batch_size=64"], capsys)
    assert status == 1 and "the disk is full" in err and called == []


def test_13_leftovers_of_killed_writes_are_removed_from_runs(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), run, progress=False)
    leftovers = [run / "checkpoints" / ".step-00000008.tmp-abc", run / ".metrics.jsonl.tmp-xyz"]
    leftovers[0].mkdir()
    leftovers[1].write_text("partial")
    train(_config(epochs=2), run, resume=True, progress=False)
    assert not any(p.exists() for p in leftovers)


def test_13_leftovers_of_killed_writes_are_removed_from_data(data_root):
    from mopoe_lib.data.polymnist import dataset_dir, prepare_polymnist

    folder = dataset_dir("fast", 0, data_root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stale = folder.parent / f".{folder.name}.tmp-killed"
    stale.mkdir()
    prepare_polymnist("fast", progress=False)
    assert not stale.exists() and (folder / "manifest.json").is_file()


# ------------------------------------------------------------------------------------ 14. tampered files


def test_14_tampered_pointer_and_state_files_are_refused_with_the_file_named(tmp_path):
    run = tmp_path / "run"
    train(_config(epochs=1), run, progress=False)
    pointer = run / "checkpoints" / "latest.json"
    good = pointer.read_text()
    pointer.write_text(json.dumps({"checkpoint": "../../../etc"}))
    with pytest.raises(CheckpointError, match="not a checkpoint of this run"):
        latest_checkpoint(run)
    pointer.write_text(good)
    state_path = latest_checkpoint(run) / "state.json"
    state = json.loads(state_path.read_text())
    state["progress"]["epoch"] = 99
    state_path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="disagree"):
        train(_config(epochs=100), run, resume=True, progress=False)
    del state["progress"]
    state_path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="state.json is damaged or incomplete"):
        rebuild_model(run)


# ----------------------------------------------------------------------------------------- 16. durability


def test_16_files_and_folders_reach_the_disk_before_the_pointer_moves(tmp_path, monkeypatch):
    from mopoe_lib import integrity

    events: list[str] = []
    real_fsync, real_dir, real_json = os.fsync, integrity.fsync_dir, runs.write_json
    monkeypatch.setattr(integrity.os, "fsync", lambda fd: (events.append("file"), real_fsync(fd))[1])
    monkeypatch.setattr(integrity, "fsync_dir", lambda path: (events.append(f"dir {Path(path).name}"),
                                                              real_dir(path))[1])
    monkeypatch.setattr(runs, "write_json", lambda path, obj: (events.append(f"write {Path(path).name}"),
                                                               real_json(path, obj))[1])
    train(_config(epochs=1), tmp_path / "run", progress=False)
    pointer = events.index("write latest.json")
    before = events[:pointer]
    assert before.count("file") >= 3  # model, optimizer and state files
    assert any(e.startswith("dir .step-") for e in before) and "dir checkpoints" in before
    modes = {p.name: p.stat().st_mode & 0o777 for p in latest_checkpoint(tmp_path / "run").iterdir()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] == (tmp_path / "run" / "config.json"
                                                                             ).stat().st_mode & 0o777
