"""`Interventionable.intervene_in_batch` (one pass over the repeated batch) against separate runs
written here with raw forward hooks, and against its own two-pass way."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from iit import Addition, Coordinate, Index, Interchange, Interventionable, ZeroAblation
from iit._dispatch import active_dispatchers
from iit.errors import ArgumentTypeError, CoordinateError, InterventionError, OutOfRangeError
from iit.learned import RotatedInterchange
from tests.conftest import ToyMLP


# ----------------------------------------------------------------------------- hand-written reference
def separate_runs(model: nn.Module, x: torch.Tensor, perm: torch.Tensor, groups, detach: bool = False):
    """The base run (recording each site's output with raw hooks), then one run per group whose
    hooks overwrite ``out[rows, region]`` with the base run's values of rows ``perm``.
    ``groups``: ``[[(module, slice, rows or None), ...], ...]``."""
    modules = {id(m) for g in groups for m, _, _ in g}
    record = {}
    handles = [m.register_forward_hook(lambda mod, a, o: record.__setitem__(id(mod), o))
               for m in {id(m): m for g in groups for m, _, _ in g}.values()]
    try:
        base_out = model(x)
    finally:
        for h in handles:
            h.remove()
    assert set(record) == modules
    outs = []
    for group in groups:
        by_module: dict[int, list] = {}
        for m, region, rows in group:
            by_module.setdefault(id(m), []).append((region, rows))

        def patch(mod, a, o, by_module=by_module):
            o = o.clone()
            source = record[id(mod)][perm]
            source = source.detach() if detach else source
            for region, rows in by_module[id(mod)]:
                keep = torch.ones(o.shape[0], dtype=torch.bool) if rows is None else rows
                o[keep, region] = source[keep, region]
            return o

        handles = [m.register_forward_hook(patch) for m in {id(m): m for m, _, _ in group}.values()]
        try:
            outs.append(model(x))
        finally:
            for h in handles:
                h.remove()
    return base_out, outs


def grads(model: nn.Module, outputs) -> dict[str, torch.Tensor]:
    model.zero_grad()
    sum((o * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum() for o in outputs).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a, b, atol=1e-6):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=atol)


# ----------------------------------------------------------------------------- MLP, plain interchanges
@pytest.mark.parametrize("one_pass", [True, False])
def test_groups_of_interchanges_equal_separate_runs(mlp, one_pass):
    torch.manual_seed(3)
    x, perm = torch.randn(6, 4), torch.randperm(6)
    r1, r2 = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool), torch.tensor([0, 1, 1, 0, 1, 0], dtype=torch.bool)
    l0, l1 = mlp.layers[0], mlp.layers[1]
    net = Interventionable(mlp)
    groups = [
        [Interchange(Coordinate("layers.0", Index.dims(0, 3))).where(r1),
         Interchange(Coordinate("layers.0", Index.dims(2, 6))).where(r2),  # overlaps the first
         Interchange(Coordinate("layers.0", Index.dims(7, 8))),  # every row, at a site with row-limited ones
         Interchange(Coordinate("layers.1", Index.dims(4, 8)))],
        [Interchange(Coordinate("layers.1", Index.dims(0, 2))).where(r2)],
    ]
    reference = [[(l0, slice(0, 3), r1), (l0, slice(2, 6), r2), (l0, slice(7, 8), None), (l1, slice(4, 8), None)],
                 [(l1, slice(0, 2), r2)]]
    base, outs = net.intervene_in_batch(x, groups, perm, one_pass=one_pass)
    got = grads(mlp, [base, *outs])
    ref_base, ref_outs = separate_runs(mlp, x, perm, reference)
    want = grads(mlp, [ref_base, *ref_outs])
    assert_same(base, ref_base)
    for o, r in zip(outs, ref_outs):
        assert_same(o, r)
        assert not torch.allclose(o, ref_base)  # the interventions changed something
    for name in want:
        assert_same(got[name], want[name])
    assert active_dispatchers() == 0 and not any(m._forward_hooks for m in mlp.modules())


def test_detached_sources_send_no_gradient_through_the_source_rows(mlp):
    torch.manual_seed(4)
    x, perm = torch.randn(5, 4), torch.tensor([4, 0, 1, 2, 3])
    net = Interventionable(mlp)
    _, [out] = net.intervene_in_batch(x, [[Interchange(Coordinate("layers.0", Index.dims(0, 4)))]], perm,
                                      detach_sources=True)
    got = grads(mlp, [out])
    _, [ref] = separate_runs(mlp, x, perm, [[(mlp.layers[0], slice(0, 4), None)]], detach=True)
    want = grads(mlp, [ref])
    for name in want:
        assert_same(got[name], want[name])


def test_without_the_base_output_it_returns_none_and_the_same_runs(mlp):
    x, perm = torch.randn(4, 4), torch.tensor([1, 2, 3, 0])
    net = Interventionable(mlp)
    group = [Interchange(Coordinate("layers.1", Index.dims(0, 4)))]
    base, [out] = net.intervene_in_batch(x, [group], perm, return_base_output=False)
    _, [ref] = separate_runs(mlp, x, perm, [[(mlp.layers[1], slice(0, 4), None)]])
    assert base is None
    assert_same(out, ref)


# ----------------------------------------------------------------------------- other interventions
def test_learned_and_sourceless_interventions_match_the_two_pass_way(mlp):
    torch.manual_seed(5)
    x, perm = torch.randn(6, 4), torch.randperm(6)
    rows = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    rotation = RotatedInterchange(Coordinate("layers.0"), 8, dims=(0, 3))
    net = Interventionable(mlp)
    net.add_intervention("rotation", rotation)
    groups = [[rotation.where(rows), Addition(Coordinate("layers.1", Index.dims(0, 2)), torch.ones(2))],
              [ZeroAblation(Coordinate("layers.0", Index.dims(1, 5))), Interchange(Coordinate("layers.0", Index.dims(0, 2)))]]
    results = {}
    for one_pass in (True, False):
        base, outs = net.intervene_in_batch(x, groups, perm, one_pass=one_pass)
        net.zero_grad()
        sum(o.pow(2).sum() for o in [base, *outs]).backward()
        results[one_pass] = ([base, *outs], {n: p.grad.clone() for n, p in net.named_parameters()})
    for a, b in zip(results[True][0], results[False][0]):
        assert_same(a, b)
    assert set(results[True][1]) >= {"interventions.rotation.rotation.parametrizations.weight.original"}
    for name, value in results[False][1].items():
        assert_same(results[True][1][name], value)


def test_interchange_from_another_site_of_the_same_module_output_uses_two_passes(mlp):
    x, perm = torch.randn(4, 4), torch.tensor([3, 2, 1, 0])
    net = Interventionable(mlp)
    cross = Interchange(Coordinate("layers.1", Index.dims(0, 2)), source_coordinate=Coordinate("layers.0", Index.dims(0, 2)))
    same_site = Interchange(Coordinate("layers.1", Index.dims(0, 2)), source_coordinate=Coordinate("layers.1", Index.dims(4, 6)))
    for iv in (cross, same_site):
        one = net.intervene_in_batch(x, [[iv]], perm)[1][0]
        two = net.intervene_in_batch(x, [[iv]], perm, one_pass=False)[1][0]
        assert_same(one, two)
    # the hand-written value of the same-site one: units 4:6 of row perm[i] into units 0:2
    h = {}
    handle = mlp.layers[1].register_forward_hook(lambda m, a, o: h.__setitem__("v", o))
    mlp(x)
    handle.remove()

    def patch(m, a, o):
        o = o.clone()
        o[:, 0:2] = h["v"][perm][:, 4:6]
        return o

    handle = mlp.layers[1].register_forward_hook(patch)
    try:
        ref = mlp(x)
    finally:
        handle.remove()
    assert_same(net.intervene_in_batch(x, [[same_site]], perm)[1][0], ref)


# ----------------------------------------------------------------------------- when rows interact
class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 6)
        self.norm = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.norm(self.inner(x)))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_in_training_mode_gets_its_own_batch_statistics(training):
    torch.manual_seed(6)
    model = NormNet().train(training)
    x, perm = torch.randn(8, 4), torch.randperm(8)
    group = [[Interchange(Coordinate("inner", Index.dims(0, 3)))]]
    reference = NormNet().train(training)
    reference.load_state_dict(model.state_dict())
    ref_base, [ref] = separate_runs(reference, x, perm, [[(reference.inner, slice(0, 3), None)]])
    base, [out] = Interventionable(model).intervene_in_batch(x, group, perm)
    assert_same(base, ref_base)
    assert_same(out, ref)
    # the running statistics saw the same two batches as the separate runs
    assert_same(model.norm.running_mean, reference.norm.running_mean)


class AuxLossNet(ToyMLP):
    """Returns ``(logits, mean activation)``: a 0-d part that cannot be cut into blocks."""

    def forward(self, x):
        h = self.layers[1](self.layers[0](x))
        return self.head(h), h.mean()


def test_an_output_that_cannot_be_cut_into_blocks_falls_back_to_two_passes():
    torch.manual_seed(7)
    model = AuxLossNet()
    net = Interventionable(model)
    x, perm = torch.randn(5, 4), torch.randperm(5)
    group = [[Interchange(Coordinate("layers.0", Index.dims(0, 4)))]]
    (base, aux), [(out, out_aux)] = net.intervene_in_batch(x, group, perm)
    (ref_base, ref_aux), [(ref_out, ref_out_aux)] = separate_runs(model, x, perm, [[(model.layers[0], slice(0, 4), None)]])
    assert_same(base, ref_base)
    assert_same(aux, ref_aux)
    assert_same(out, ref_out)
    assert_same(out_aux, ref_out_aux)
    assert net.intervene_in_batch(x, group, perm)[1][0][0].shape == (5, 3)  # later calls: two passes directly


# ----------------------------------------------------------------------------- transformers
def test_token_positions_per_row_in_a_left_padded_batch_match_two_passes():
    from iit.transformers import TransformerCoordinate, TransformerInterventionable
    from iit.transformers.positions import Tokens
    from tests.iit.transformers._models import tiny_model

    model = tiny_model("llama", head=True)
    net = TransformerInterventionable(model)
    torch.manual_seed(8)
    ids = torch.randint(3, 60, (6, 7))
    mask = torch.ones(6, 7, dtype=torch.long)
    for row, pad in enumerate([0, 2, 1, 3, 0, 2]):
        mask[row, :pad] = 0
    base = {"input_ids": ids, "attention_mask": mask}
    perm = torch.tensor([5, 3, 0, 1, 2, 4])
    rows = torch.tensor([1, 0, 1, 1, 1, 0], dtype=torch.bool)
    # two coordinates at one site whose per-row indices differ only by their position tensors
    groups = [[Interchange(TransformerCoordinate(0, "block_output", position=Tokens.at(0), dims=(0, 8))).where(rows),
               Interchange(TransformerCoordinate(0, "block_output", position=Tokens.at(-1), dims=(0, 8)))],
              [Interchange(TransformerCoordinate(1, "head_attention_output", position=Tokens.at(-2), head=1))]]
    results = {}
    for one_pass in (True, False):
        base_out, outs = net.intervene_in_batch(base, groups, perm, one_pass=one_pass)
        results[one_pass] = [base_out.logits, *(o.logits for o in outs)]
    for a, b in zip(results[True], results[False]):
        assert_same(a, b, atol=1e-5)
    assert not torch.allclose(results[True][1], results[True][0])


# ----------------------------------------------------------------------------- bad input
def test_bad_calls_are_refused_before_any_forward(mlp):
    calls = []
    handle = mlp.register_forward_pre_hook(lambda m, a: calls.append(1))
    net = Interventionable(mlp)
    x = torch.randn(4, 4)
    ok = [Interchange(Coordinate("layers.0"))]
    try:
        with pytest.raises(InterventionError, match="list of groups"):
            net.intervene_in_batch(x, [], torch.arange(4))
        with pytest.raises(InterventionError, match="list of groups"):
            net.intervene_in_batch(x, ok[0], torch.arange(4))  # type: ignore[arg-type]
        with pytest.raises(OutOfRangeError, match="one row number per base row"):
            net.intervene_in_batch(x, [ok], torch.arange(3))
        with pytest.raises(OutOfRangeError, match="out of range"):
            net.intervene_in_batch(x, [ok], torch.tensor([0, 1, 2, 4]))
        with pytest.raises(ArgumentTypeError):
            net.intervene_in_batch(x, [ok], torch.zeros(4))
        with pytest.raises(InterventionError, match="reads source 1"):
            net.intervene_in_batch(x, [[Interchange(Coordinate("layers.0"), source=1)]], torch.arange(4))
        with pytest.raises(CoordinateError, match="layers.1"):
            net.intervene_in_batch(x, [[Interchange(Coordinate("layers.7"))]], torch.arange(4))
        with pytest.raises(InterventionError, match="at least one intervention"):
            net.intervene_in_batch(x, [ok, []], torch.arange(4))
    finally:
        handle.remove()
    assert calls == []


class Failing(ToyMLP):
    def forward(self, x):
        super().forward(x)
        raise RuntimeError("boom")


def test_hooks_are_removed_after_an_error_in_the_forward():
    model = Failing()
    with pytest.raises(RuntimeError, match="boom"):
        Interventionable(model).intervene_in_batch(torch.randn(3, 4), [[Interchange(Coordinate("layers.0"))]],
                                                   torch.tensor([2, 0, 1]))
    assert active_dispatchers() == 0 and not any(m._forward_hooks for m in model.modules())


# ----------------------------------------------------------------------------- random plans
@st.composite
def plans(draw):
    """Random groups of interchanges on ToyMLP's two hidden layers: dims ranges (overlapping or
    not), each on all rows or on a random row mask."""
    n = draw(st.integers(2, 6))
    perm = draw(st.permutations(list(range(n))))
    groups = []
    for _ in range(draw(st.integers(1, 3))):
        group = []
        for _ in range(draw(st.integers(1, 4))):
            layer = draw(st.sampled_from(["layers.0", "layers.1"]))
            start = draw(st.integers(0, 7))
            stop = draw(st.integers(start + 1, 8))
            rows = draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n))
            group.append((layer, start, stop, rows))
        groups.append(group)
    return n, perm, groups


@settings(max_examples=40, deadline=None)
@given(plans())
def test_random_plans_equal_separate_runs(plan):
    n, perm, spec = plan
    torch.manual_seed(9)
    model = ToyMLP()
    net = Interventionable(model)
    x, perm = torch.randn(n, 4), torch.tensor(perm)
    modules = {"layers.0": model.layers[0], "layers.1": model.layers[1]}
    groups, reference = [], []
    for group in spec:
        ivs, ref = [], []
        for layer, start, stop, rows in group:
            iv = Interchange(Coordinate(layer, Index.dims(start, stop)))
            mask = None if rows is None else torch.tensor(rows)
            ivs.append(iv if mask is None else iv.where(mask))
            ref.append((modules[layer], slice(start, stop), mask))
        groups.append(ivs)
        reference.append(ref)
    base, outs = net.intervene_in_batch(x, groups, perm)
    ref_base, ref_outs = separate_runs(model, x, perm, reference)
    assert_same(base, ref_base)
    for o, r in zip(outs, ref_outs):
        assert_same(o, r)
