"""Config loading: typed values, overrides, _base_ inheritance, and errors that name file, key and fix."""
import pytest

from vreid.config import ConfigError, ExperimentConfig, load_experiment
from vreid.config.loader import apply_overrides, parse_override


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_and_overrides_build_typed_config(tmp_path):
    p = write(tmp_path, "c.yaml", "seed: 3\noptim: {lr: 3.5e-4}\nmodel: {name: bot, triplet_margin: 0.5}\n")
    cfg = load_experiment(p, ["schedule.epochs=7", "data.height=64", "model.backbone.name=resnet18"])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.seed == 3 and cfg.optim.lr == pytest.approx(3.5e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.schedule.epochs == 7 and cfg.data.height == 64
    assert type(cfg.model).__name__ == "BotConfig"
    assert cfg.model.triplet_margin == 0.5 and cfg.model.backbone.name == "resnet18"


def test_base_file_is_merged_underneath(tmp_path):
    write(tmp_path, "base.yaml", "seed: 1\noptim: {lr: 0.1, name: sgd}\n")
    p = write(tmp_path, "child.yaml", "_base_: base.yaml\noptim: {lr: 0.2}\n")
    cfg = load_experiment(p)
    assert cfg.seed == 1 and cfg.optim.name == "sgd" and cfg.optim.lr == pytest.approx(0.2)


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    p = write(tmp_path, "c.yaml", "optim: {lrate: 0.1}\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    msg = str(e.value)
    assert str(p) in msg and "optim.lrate" in msg and "lr" in msg and "weight_decay" in msg


def test_bad_choice_lists_allowed_values(tmp_path):
    p = write(tmp_path, "c.yaml", "optim: {name: rmsprop}\n")
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    assert "optim.name" in str(e.value) and "adam" in str(e.value) and "sgd" in str(e.value)


def test_wrong_type_is_reported(tmp_path):
    p = write(tmp_path, "c.yaml", "schedule: {epochs: many}\n")
    with pytest.raises(ConfigError, match=r"schedule\.epochs.*integer"):
        load_experiment(p)


def test_unknown_method_and_method_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.name.*bot"):
        load_experiment(None, ["model.name=nosuchmethod"])
    with pytest.raises(ConfigError, match=r"model\.tripletmargin"):
        load_experiment(None, ["model.tripletmargin=0.3"])


def test_validate_hook_rejects_bad_values():
    with pytest.raises(ConfigError, match="ids_per_batch"):
        load_experiment(None, ["data.ids_per_batch=0"])


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_experiment("does/not/exist.yaml")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_a_schedule_key_the_schedule_ignores_is_an_error():
    with pytest.raises(ConfigError, match=r"schedule\.delay_epochs.*'warmup_multistep' does not use it"):
        load_experiment(None, ["schedule.delay_epochs=30"])
    with pytest.raises(ConfigError, match=r"schedule\.min_lr_factor"):
        load_experiment(None, ["schedule.name=constant", "schedule.min_lr_factor=0.01"])
    cfg = load_experiment(None, ["schedule.name=warmup_cosine", "schedule.delay_epochs=30"])
    assert cfg.schedule.delay_epochs == 30
