"""Models by name: every module directly in pipeline/models that defines `SPEC` (a `ModelSpec`)
is a model, found when the registry is first read; the module is named after its model
(`torch_cnn.py` defines `torch_cnn`). Adding a model is adding such a module.

The spec modules import no framework at module level (torch is imported when a learner is built),
and the machinery they share lives apart: `spec` and `learner` here, the training engines in the
`engines` subpackage, which discovery never imports. So reading the registry (config validation,
the Tune driver, `medgrid report`) never imports torch.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.models.spec import ModelSpec

if TYPE_CHECKING:
    from pipeline.config import TrialConfig
    from pipeline.data import Splits
    from pipeline.models.learner import Learner


class UnknownModel(UserError, ValueError):
    """A model name no module defines: a user error (one line, exit 2) that pydantic validators
    also report as theirs (they turn ValueErrors into validation errors)."""


@functools.cache
def registry() -> dict[str, ModelSpec]:
    """Every model's spec by name, in module-name order (found once per process)."""
    specs: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.ispkg:  # the engines: how models train, not models
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if spec is None:
            continue
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"{module.__name__}.SPEC is a {type(spec).__name__}; "
                            "expected a ModelSpec")
        if spec.name != info.name:  # one place per model: its module is named after it
            raise ValueError(f"{module.__name__} defines model {spec.name!r}; expected the "
                             f"module to be named after its model ({spec.name}.py)")
        specs[spec.name] = spec
    return specs


def model_names() -> tuple[str, ...]:
    """The registered model names, sorted."""
    return tuple(sorted(registry()))


def find_spec(name: str) -> ModelSpec | None:
    """The spec of model `name`, or None (e.g. runs of a model that no longer exists)."""
    return registry().get(name)


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name`; `UnknownModel` (one line, naming the models there are) if
    none."""
    spec = find_spec(name)
    if spec is None:
        raise UnknownModel(f"model = {name!r} is not a registered model; expected one of "
                         f"{', '.join(model_names())}")
    return spec


def build_learner(config: TrialConfig, data: Splits) -> Learner:
    """The learner for `config.model`, bound to `data` and seeded with `config.seed`."""
    return get_spec(config.model).factory(config, data)
