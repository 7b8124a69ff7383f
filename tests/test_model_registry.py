"""The model registry: each model is one spec module under pipeline/models, and everything else
(config validation, resources, the report's columns and notes) follows from its spec.

All but the CLI test run in-process on tiny data, without Ray or an MLflow server; the CLI test
runs `python -m pipeline tune` in a subprocess and checks it stops before anything launches.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline import models
from pipeline.config import TrialConfig
from pipeline.data import Splits
from pipeline.models import build_learner, get_spec, model_names
from pipeline.models.spec import OPTIONS, ModelSpec, Reference
from pipeline.report.reference import model_reference_notes
from pipeline.train import fit

pytestmark = pytest.mark.fast  # no Ray, no MLflow server: part of `make test-fast`

HOMEWORK = {"numpy_perceptron", "numpy_logreg", "numpy_mlp", "torch_logreg", "torch_ffn"}
# A value of each option that differs from TrialConfig's default.
OTHER_VALUE = {"batch_size": 7, "hidden_size": 13, "layers": 2, "activation": "tanh",
               "dropout": 0.25, "l2_decay": 1e-3, "optimizer": "adam"}


def test_the_registry_holds_the_homework_models() -> None:
    assert HOMEWORK <= set(model_names())
    assert {get_spec(n).family for n in HOMEWORK} == {"numpy", "torch"}


@pytest.mark.parametrize("name", model_names())
def test_every_model_validates_builds_and_trains_one_epoch(name: str,
                                                           tiny_splits: Splits) -> None:
    spec = get_spec(name)
    config = TrialConfig(study="registry", model=name, epochs=1, learning_rate=0.01,
                         batch_size=32)
    assert config.dtype == spec.dtypes[0]  # the model's own default precision
    learner = build_learner(config, tiny_splits)
    before = learner.get_state()
    (record,) = fit(learner, config.epochs)
    assert not record.diverged
    assert all(math.isfinite(v) for v in record.metrics.values()), record.metrics
    after = learner.get_state()
    assert any(k.startswith("param/") and not np.array_equal(v, after[k])
               for k, v in before.items()), "one epoch changed no parameter"
    test = learner.evaluate("test")
    assert 0.0 <= test.acc <= 1.0 and len(test.predictions) == len(tiny_splits.y_test)


def test_an_unknown_model_is_refused_naming_the_models_there_are() -> None:
    with pytest.raises(ValidationError) as error:
        TrialConfig(study="s", model="torch_nope", epochs=1, learning_rate=0.1)
    message = str(error.value)
    assert "torch_nope" in message and all(name in message for name in model_names())


@pytest.mark.parametrize("name", model_names())
def test_options_a_model_fixes_are_refused_when_set_otherwise(name: str) -> None:
    spec = get_spec(name)
    for key in spec.fixed:
        with pytest.raises(ValidationError, match=f"{key} = .* is not supported by {name}"):
            TrialConfig(study="s", model=name, epochs=1, learning_rate=0.1,
                        **{key: OTHER_VALUE[key]})
    for key in set(OPTIONS) - set(spec.fixed):  # the others are accepted
        TrialConfig(study="s", model=name, epochs=1, learning_rate=0.1,
                    **{key: OTHER_VALUE[key]})


def test_the_trial_resources_come_from_the_spec() -> None:
    from pipeline.plan import Resources

    resources = Resources(cpus_per_trial=2.0, gpus_per_trial=0.5)
    assert resources.for_model("numpy_mlp") == {"CPU": 1.0}  # numpy: one CPU, no GPU
    assert resources.for_model("torch_ffn") == {"CPU": 2.0, "GPU": 0.5}


def test_reading_the_registry_never_imports_torch() -> None:
    """numpy-only trials and `medgrid report` must not pay for (or need) torch."""
    code = ("import sys; import pipeline.cli, pipeline.config, pipeline.report; "
            "from pipeline.models import registry, get_spec; registry(); "
            "from pipeline.report.summary import not_applicable; not_applicable('torch_ffn'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("name", model_names())
def test_a_models_engine_loads_its_trainer_and_torch_only_for_torch_models(name: str) -> None:
    """A worker imports a trial's engine before the trial's run starts; a numpy-only worker
    must not pay for torch there."""
    family = get_spec(name).family
    code = (f"import sys; from pipeline.models import get_spec; get_spec({name!r}).load_engine(); "
            f"assert 'pipeline.models.engines.{family}_models' in sys.modules; "
            f"assert ('torch' in sys.modules) == {family == 'torch'}, 'torch imported or not'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_spec_module_must_be_named_after_its_model(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    (tmp_path / "torch_misnamed.py").write_text(
        "from pipeline.models.spec import torch_spec\n"
        "SPEC = torch_spec('torch_other', lambda config: None)\n")
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    models.registry.cache_clear()
    try:
        with pytest.raises(ValueError, match="named after its model"):
            models.registry()
    finally:
        monkeypatch.undo()
        models.registry.cache_clear()
        sys.modules.pop("pipeline.models.torch_misnamed", None)


def test_a_specs_published_rows_become_notes_under_its_tables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = "MedMNIST v2, OCTMNIST test split"
    spec = ModelSpec("torch_fake", "torch", lambda config, data: None, references=(
        Reference("ResNet-18 (28)", "test/acc", 0.743, source),
        Reference("auto-sklearn", "test/acc", 0.601, source)))
    monkeypatch.setitem(models.registry(), "torch_fake", spec)
    (note,) = model_reference_notes("torch_fake")
    assert source in note and "ResNet-18 (28) test acc 0.743" in note
    assert "auto-sklearn test acc 0.601" in note
    assert model_reference_notes("torch_ffn") == []
    assert model_reference_notes("gone_model") == []


def test_a_space_naming_an_unregistered_model_fails_before_launch(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("name: s\nmodel: torch_nope\nparams: {epochs: 1, learning_rate: 0.1}\n")
    storage, store = tmp_path / "ray_results", tmp_path / "mlflow.db"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "tune", str(space), "--dataset", "synthetic",
         "--tracking-uri", f"sqlite:///{store}", "--storage", str(storage)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(space) in lines[0] and "torch_nope" in lines[0]
    assert all(name in lines[0] for name in model_names())
    # Before launch: no Ray results, no tracking store written.
    assert not storage.exists() and not store.exists()
