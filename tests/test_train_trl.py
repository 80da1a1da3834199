"""The trainer notices when TRL moves: the hooks PreferenceTrainer overrides exist with the parameters it relies on,
every DPOConfig field dpocheck passes is declared, and a TRL without a hook stops ``dpocheck train`` with exit 2
and one line naming the TRL version, before any model loads."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

import trl  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from dpocheck.cli import main  # noqa: E402
from dpocheck.errors import InputError  # noqa: E402
from dpocheck.llm.train import trainer as tr  # noqa: E402
from dpocheck.llm.train.run import config_overrides  # noqa: E402
from dpocheck.llm.train.settings import TrainSettings  # noqa: E402


def test_the_installed_trl_has_every_hook():
    tr.check_trl()
    for name in tr.TRL_HOOKS:
        assert name in vars(tr.PreferenceTrainer) or name == "log", f"PreferenceTrainer no longer overrides {name}"


def test_the_tested_range_is_the_pinned_range():
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"trl{tr.TESTED_TRL}"' in pyproject
    major, minor = (int(x) for x in trl.__version__.split(".")[:2])
    assert (1, 16) <= (major, minor) < (1, 17)


@pytest.mark.parametrize("hook", sorted(tr.TRL_HOOKS))
def test_a_missing_hook_is_refused_naming_the_trl_version(hook, monkeypatch):
    class Moved(DPOTrainer):
        pass

    monkeypatch.setattr(Moved, hook, None, raising=False)
    with pytest.raises(InputError, match=rf"TRL {trl.__version__}: DPOTrainer\.{hook} is missing.*trl>=1\.16,<1\.17"):
        tr.check_trl(Moved)


@pytest.mark.parametrize("name", tr.TRL_PATCHED_FUNCTIONS)
def test_a_missing_patched_function_is_refused(name, monkeypatch):
    """dpocheck replaces TRL's state-dict hash and reference-model loader during DPOTrainer.__init__."""
    import trl.trainer.dpo_trainer as dpo_module

    monkeypatch.delattr(dpo_module, name)
    with pytest.raises(InputError, match=rf"dpo_trainer\.{name} is missing"):
        tr.check_trl()


def test_a_hook_with_other_parameters_is_refused(monkeypatch):
    class Moved(DPOTrainer):
        def _precompute_ref_logps(self, data, batch_size):  # a renamed parameter
            return data

    with pytest.raises(InputError, match=r"_precompute_ref_logps takes \(data, batch_size\)"):
        tr.check_trl(Moved)


def test_every_config_field_dpocheck_passes_is_declared(tmp_path):
    declared = {f.name for f in dataclasses.fields(DPOConfig)}
    settings = TrainSettings(data="d.jsonl", loss="dpo", beta=0.1, out=str(tmp_path), max_steps=2)
    passed = tr.preference_config_kwargs(str(tmp_path), **config_overrides(settings))
    assert set(passed) <= declared, sorted(set(passed) - declared)
    config = tr.preference_config(str(tmp_path), **config_overrides(settings))
    assert config.gradient_checkpointing is False and config.bf16 is False and config.precompute_ref_log_probs
    settings.gradient_checkpointing = True
    passed = tr.preference_config_kwargs(str(tmp_path), **config_overrides(settings))
    assert set(passed) <= declared, sorted(set(passed) - declared)
    config = tr.preference_config(str(tmp_path), **config_overrides(settings))
    assert config.gradient_checkpointing is True and config.gradient_checkpointing_kwargs == {"use_reentrant": False}


def test_train_stops_with_exit_2_before_loading_when_a_hook_is_gone(tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(DPOTrainer, "_precompute_ref_logps")
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "Q?", "chosen": " yes", "rejected": " no"}\n')
    from dpocheck.llm.models import save_toy_model

    model = save_toy_model(tmp_path / "m")
    capsys.readouterr()
    argv = ["train", "--model", str(model), "--data", str(data), "--loss", "dpo", "--beta", "0.1"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--max-steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"TRL {trl.__version__}" in err[0] and "_precompute_ref_logps is missing" in err[0]
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_the_callback_logs_through_the_public_log_in_eval_mode():
    """The U callback's logging goes through ``trainer.log`` (public API), never the unbound ``Trainer.log``."""
    from dpocheck.llm.train import callback

    source = inspect.getsource(callback)
    assert "Trainer.log(" not in source and "self.trainer.log(" in source
    assert "control.should_log =" not in source
