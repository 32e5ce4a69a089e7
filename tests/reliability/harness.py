"""The catalogue's harness: one bad call per case, and everything the issue asks of it checked.

For each :class:`Case` :func:`run_case` builds a fresh environment (a tiny model, its wrapper and
inputs), counts the model's forward calls, takes a :class:`Snapshot` (every module's hook dicts,
train/eval modes, ``requires_grad`` flags, parameter and buffer values, and torch's global
module hooks), runs the bad call and asserts

* the error class (and that it is a library error: ``IITError`` or ``CausalModelError``),
* that the message names the culprit (every substring of ``culprit``),
* that it came before the model's forward when ``before_forward`` (the cause was knowable),
* that the snapshot is unchanged (no hook left, same modes, flags and values),
* that the environment's next correct call gives the result of an independent reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_globals

from causal_models.errors import CausalModelError
from iit.errors import IITError

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


@dataclass
class Snapshot:
    """Everything about a model that a failed call must leave as it was."""

    hooks: list[tuple]
    modes: list[bool]
    flags: list[bool]
    values: list[Tensor]
    global_hooks: list[tuple]

    @staticmethod
    def of(model: nn.Module | None) -> Snapshot:
        global_hooks = [tuple(getattr(module_globals, name, {}).keys()) for name in _GLOBAL_HOOKS]
        if model is None:
            return Snapshot([], [], [], [], global_hooks)
        modules = list(model.modules())
        hooks = [tuple((name, tuple(getattr(m, name, {}).keys())) for name in _HOOK_DICTS) for m in modules]
        values = [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]
        return Snapshot(
            hooks,
            [m.training for m in modules],
            [p.requires_grad for p in model.parameters()],
            values,
            global_hooks,
        )

    def assert_same(self, other: Snapshot) -> None:
        assert other.hooks == self.hooks, "a hook was left on the model (or one was removed)"
        assert other.global_hooks == self.global_hooks, "a global module hook was left behind"
        assert other.modes == self.modes, "a train/eval mode changed"
        assert other.flags == self.flags, "a requires_grad flag changed"
        assert len(other.values) == len(self.values)
        for a, b in zip(self.values, other.values):
            assert a.shape == b.shape and torch.equal(a, b), "a parameter or buffer changed"


class ForwardCounter:
    """Counts calls of ``model.forward`` with a forward pre-hook on the root module (registered
    before the snapshot, removed after the checks)."""

    def __init__(self, model: nn.Module | None) -> None:
        self.calls = 0
        self._handle = None
        if model is not None:
            self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: Any) -> None:
        self.calls += 1

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()


@dataclass
class Env:
    """A tiny model, its wrapper, inputs, and the next correct call.

    Attributes:
        model: the ``nn.Module`` whose state is watched (``None`` for model-free entry points).
        net: the wrapper (or anything the cases need).
        x: inputs.
        good: the next correct call, returning ``(got, want)`` with ``want`` from an independent
            reference (a hand computation, a plain forward).
        extra: anything else the cases use.
    """

    model: nn.Module | None
    net: Any
    x: Any
    good: Callable[[], tuple[Any, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One bad input or fault condition.

    Attributes:
        id: the test id (``area-what``).
        env: name of the environment builder.
        bad: the bad call.
        error: the exception class expected.
        culprit: substrings the message must contain (the culprit, the valid values, the fix).
        before_forward: the cause is knowable before the model runs, so no forward may happen.
        fixed: this case needed a library change in issue #16 (counted in the closing note).
    """

    id: str
    env: str
    bad: Callable[[Env], Any]
    error: type[BaseException]
    culprit: tuple[str, ...]
    before_forward: bool = True
    fixed: bool = False


def run_case(case: Case, envs: dict[str, Callable[[], Env]]) -> BaseException:
    """Run one catalogue case with every check of the module docstring; returns the error."""
    env = envs[case.env]()
    counter = ForwardCounter(env.model)
    try:
        before = Snapshot.of(env.model)
        with pytest.raises(case.error) as info:
            case.bad(env)
        err = info.value
        assert isinstance(err, (IITError, CausalModelError)), f"{type(err).__name__} is not a library error"
        message = str(err)
        for part in case.culprit:
            assert part in message, f"{part!r} not in the message: {message}"
        if case.before_forward:
            assert counter.calls == 0, f"the model ran {counter.calls} time(s) before the error"
        before.assert_same(Snapshot.of(env.model))
        got, want = env.good()
        _assert_equal(got, want)
    finally:
        counter.remove()
    return err


def _assert_equal(got: Any, want: Any) -> None:
    if isinstance(want, Tensor):
        torch.testing.assert_close(got, want)
    elif isinstance(want, dict):
        assert set(got) == set(want)
        for k in want:
            _assert_equal(got[k], want[k])
    else:
        assert got == want
