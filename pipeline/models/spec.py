"""What a model is to the rest of medgrid: one `ModelSpec`, defined by the model's own module.

The config's allowed model names and option rules, the dtype a trial trains in, the Ray resource
bundle of a trial, which options the report leaves empty and which metrics its tables show, and
published results set beside the model's own: all read from the spec, so that a new model is
one module (and a search-space YAML) and nothing else.

This module imports neither numpy's learners nor torch: specs are read by the config, the Tune
driver and the report, which must not pay for (or need) torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipeline.config import TrialConfig
    from pipeline.data import Splits
    from pipeline.models.learner import Learner

Family = Literal["numpy", "torch"]
# The module that trains each family's models (imported by `ModelSpec.load_engine`).
ENGINES: Mapping[str, str] = MappingProxyType({
    "numpy": "pipeline.models.engines.numpy_models",
    "torch": "pipeline.models.engines.torch_models",
})
LearnerFactory = Callable[["TrialConfig", "Splits"], "Learner"]
# Builds a torch model's nn.Module from the config (torch imported inside, when called).
ModuleFactory = Callable[["TrialConfig"], Any]

# The TrialConfig fields that describe the model or its training, beside the ones every model
# reads (epochs, learning_rate, seed, dtype). A spec says which of them its learner reads.
OPTIONS = ("batch_size", "hidden_size", "layers", "activation", "dropout", "l2_decay",
           "optimizer")
# The report's table columns. The homework's numpy tables (1-3) give accuracies only; its torch
# tables (4-7) give the training loss instead of the training accuracy.
ACCURACIES = ("train/acc", "val/acc", "test/acc")
LOSS_ACCURACIES = ("train/loss", "val/acc", "test/acc")


@dataclass(frozen=True)
class Reference:
    """A published result of another model on the same task, shown beside this model's runs:
    `label` names the published model, `metric` is one of the report's metric names."""

    label: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class ModelSpec:
    """Everything medgrid needs to know about one model.

    `uses`: the OPTIONS its learner reads; the others are not applicable (left empty in the
    report). `fixed`: options restricted to one value (a space that sets another is refused
    when loaded); an option that is neither used nor fixed is accepted and ignored.
    `dtypes`: the float precisions it trains in, the default first. `resources`: the Ray bundle
    of each trial, or None for the sweep's --cpus-per-trial / --gpus-per-trial.
    """

    name: str
    family: Family
    factory: LearnerFactory
    description: str = ""
    uses: frozenset[str] = frozenset(OPTIONS)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    dtypes: tuple[str, ...] = ("float32",)
    resources: Mapping[str, float] | None = None
    table_metrics: tuple[str, ...] = LOSS_ACCURACIES
    references: tuple[Reference, ...] = ()
    module: ModuleFactory | None = None  # torch models: the nn.Module the learner trains

    def __post_init__(self) -> None:
        unknown = (set(self.uses) | set(self.fixed)) - set(OPTIONS)
        if unknown:  # a typo here would silently make an option "not applicable"
            raise ValueError(f"model spec {self.name}: unknown options {sorted(unknown)}; "
                             f"expected some of {list(OPTIONS)}")
        if not self.dtypes:
            raise ValueError(f"model spec {self.name}: no dtype")
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))

    def load_engine(self) -> None:
        """Import the code that trains this model (for torch, torch itself: about a second).
        A trial's worker calls it before the trial's run starts, so that a worker's start-up
        is not counted as the first trial's time; a second call costs nothing."""
        importlib.import_module(ENGINES[self.family])

    @property
    def not_applicable(self) -> tuple[str, ...]:
        """The options its learner never reads, in OPTIONS order."""
        return tuple(o for o in OPTIONS if o not in self.uses)

    def check(self, config: TrialConfig) -> None:
        """ValueError (one line, naming key, value and what is expected) unless `config` only
        sets options this model supports."""
        if config.dtype not in self.dtypes:
            raise ValueError(f"dtype = {config.dtype!r} is not supported by {self.name}; "
                             f"expected {_one_of(self.dtypes)}")
        for key, expected in self.fixed.items():
            value = getattr(config, key)
            if value != expected:
                raise ValueError(f"{key} = {value!r} is not supported by {self.name}; "
                                 f"expected {expected!r}")


def _one_of(values: tuple[str, ...]) -> str:
    return repr(values[0]) if len(values) == 1 else f"one of {list(values)}"


# ---------------------------------------------------------------- the two families

# The from-scratch numpy models are the homework's (question 1): one ReLU hidden layer at most,
# plain per-sample SGD (so no batch size), no dropout or L2; float64 (the homework's precision)
# unless float32 is asked for. They run single-threaded on one CPU, whatever the sweep's flags.
NUMPY_FIXED = {"layers": 1, "activation": "relu", "dropout": 0.0, "l2_decay": 0.0,
               "optimizer": "sgd"}


def numpy_spec(name: str, factory: LearnerFactory, *, uses: frozenset[str],
               description: str = "", references: tuple[Reference, ...] = ()) -> ModelSpec:
    """The spec of a numpy model: the family's fixed options, dtypes, one CPU per trial."""
    return ModelSpec(name, "numpy", factory, description, uses, NUMPY_FIXED,
                     ("float64", "float32"), {"CPU": 1.0}, ACCURACIES, references)


def torch_spec(name: str, module: ModuleFactory, *, uses: frozenset[str] = frozenset(OPTIONS),
               fixed: Mapping[str, Any] | None = None, description: str = "",
               references: tuple[Reference, ...] = ()) -> ModelSpec:
    """The spec of a torch model from the function that builds its nn.Module: trained in
    float32 by `engines.torch_models` (autograd, or the fused fast path for plain Linear
    stacks), on the sweep's CPUs / GPUs per trial."""

    def factory(config: TrialConfig, data: Splits) -> Learner:
        from pipeline.models.engines import torch_models  # torch only when a trial builds one

        return torch_models.build(name, config, data)

    return ModelSpec(name, "torch", factory, description, uses, fixed or {}, ("float32",),
                     None, LOSS_ACCURACIES, references, module)
