"""IITModule losses against a hand-written computation (raw hooks + the causal model written
out), gradient paths, metrics, and setup-time errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from causal_models import CounterfactualConfig, CounterfactualGenerator
from iit import AlignmentError, Coordinate, Index
from iit.training import IITConfig, IITModule, InterchangeAccuracy
from tests.iit.training.tiny import TinyDigitSum


def make_batch(n: int = 32, seed: int = 0, n_sources: int = 1):
    task = TinyDigitSum()
    config = CounterfactualConfig(variables=("S", "z"), n_sources=n_sources)
    return task, CounterfactualGenerator(task.causal_model(), config, seed=seed).generate(n)


def hand_written_losses(net, batch, sources):
    """Behaviour and IIT losses written out: causal counterfactual by hand, raw forward hooks."""
    enc = TinyDigitSum().encode_inputs
    x, y, z = (batch.base[k] for k in "xyz")
    xs, ys, zs = (sources[k] for k in "xyz")
    on_s, on_z = batch.intervened[:, 0], batch.intervened[:, 1]
    s_base, s_src = x + y, xs + ys
    s_cf = torch.where(on_s, s_src, s_base)
    z_cf = torch.where(on_z, zs, z)
    label_cf = s_cf + z_cf
    label_base = s_base + z
    store = {}
    layer = net.layers[0]
    h = layer.register_forward_hook(lambda m, a, o: store.__setitem__("src", o))
    net(enc(sources))
    h.remove()
    src = store["src"]

    def patch(m, a, o):
        o = o.clone()
        o[on_s, 0:8] = src[on_s, 0:8]
        o[on_z, 8:16] = src[on_z, 8:16]
        return o

    h = layer.register_forward_hook(patch)
    out_cf = net(enc(batch.base))
    h.remove()
    out_b = net(enc(batch.base))
    return F.cross_entropy(out_b, label_base), F.cross_entropy(out_cf, label_cf)


@pytest.mark.parametrize("in_batch", [True, False])
def test_losses_equal_a_hand_written_computation(in_batch):
    task, batch = make_batch()
    module = IITModule(task, IITConfig(in_batch_sources=in_batch))
    losses = module.compute_losses(batch, torch.Generator().manual_seed(5))
    if in_batch:
        perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(5))
        sources = {k: v[perm] for k, v in batch.base.items()}
    else:
        sources = batch.sources[0]
    ref_b, ref_iit = hand_written_losses(module.network.model, batch, sources)
    assert torch.allclose(losses["behaviour"], ref_b, atol=1e-6)
    assert torch.allclose(losses["iit"], ref_iit, atol=1e-6)
    assert torch.allclose(losses["total"], ref_b + ref_iit, atol=1e-6)


class _LearnedTiny(TinyDigitSum):
    """``S`` and ``z`` each aligned to a learned rotation of their own half of ``layers.0``."""

    def alignments(self):
        from iit.learned import RotatedInterchange

        torch.manual_seed(3)
        halves = [Coordinate("layers.0", Index.dims(0, 8)), Coordinate("layers.0", Index.dims(8, 16))]
        return {"default": {"S": RotatedInterchange(halves[0], 8, dims=(0, 4)),
                            "z": RotatedInterchange(halves[1], 8, dims=(0, 4))}}


@pytest.mark.parametrize("task_type", [TinyDigitSum, _LearnedTiny])
@pytest.mark.parametrize("absent", [None, 1])
def test_in_batch_step_equals_the_generic_interchange(task_type, absent):
    """The in-batch step's own bound interventions and causal labels give the loss and every
    gradient of ``Alignment.bound_interventions`` + ``interchange_per_row`` with source slot 0,
    also when no row intervenes on one variable (its learned parameters then get no gradient)."""
    from dataclasses import replace

    task, batch = make_batch(n=24, seed=4)
    task = task_type()
    if absent is not None:
        intervened = batch.intervened.clone()
        intervened[:, absent] = False
        intervened[:, 1 - absent] = True
        batch = replace(batch, intervened=intervened)
    module = IITModule(task, IITConfig(behaviour_weight=0.0))
    loss = module.compute_losses(batch, torch.Generator().manual_seed(6))["iit"]
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)

    perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(6))
    net, alignment, enc = module.network, module.alignment, task.encode_inputs
    slot0 = torch.zeros_like(batch.source_index)
    sources = [{k: v[perm] for k, v in batch.base.items()}]
    values = module.causal_model.interchange_per_row(batch.base, sources, batch.variables, batch.intervened, slot0)
    bound = alignment.bound_interventions(batch.variables, batch.intervened, slot0)
    activations = net.collect(enc(batch.base), alignment.source_coordinates()).rows(perm)
    out = net.intervene(enc(batch.base), bound, [activations])
    labels = module.causal_model.domain("O").index_of(values["O"])
    ref = F.cross_entropy(out, labels)
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    assert torch.equal(loss, ref)
    for g, r in zip(grads, ref_grads):
        assert (g is None) == (r is None)
        assert g is None or torch.equal(g, r)
    if absent is not None and task_type is _LearnedTiny:
        assert sum(g is None for g in grads) >= 1  # the absent variable's rotation


def test_counterfactual_labels_follow_the_causal_model_not_the_data_in_batch_mode():
    task, batch = make_batch()
    module = IITModule(task, IITConfig(in_batch_sources=True, behaviour_weight=0.0))
    # the batch's own counterfactual labels refer to its own sources; corrupting them must not matter
    from dataclasses import replace

    corrupted = replace(batch, counterfactual_output=torch.zeros_like(batch.counterfactual_output))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert torch.equal(module.compute_losses(batch, g())["iit"], module.compute_losses(corrupted, g())["iit"])


def test_source_side_gradients_follow_detach_sources():
    """Backpropagate the IIT loss alone: gradients reach the source inputs only when
    detach_sources is False (three-pass mode, where the source run is separate)."""
    for detach in (False, True):
        task, batch = make_batch()
        task.track_inputs = True
        module = IITModule(task, IITConfig(in_batch_sources=False, detach_sources=detach, behaviour_weight=0.0))
        task.encoded.clear()
        loss = module.compute_losses(batch, torch.Generator().manual_seed(0))["iit"]
        loss.backward()
        base_input, source_input = task.encoded[0], task.encoded[1]
        assert base_input.grad is not None and base_input.grad.abs().sum() > 0
        if detach:
            assert source_input.grad is None or torch.count_nonzero(source_input.grad) == 0
        else:
            assert source_input.grad is not None and source_input.grad.abs().sum() > 0


def test_in_batch_detach_equals_hand_written_base_only_gradient():
    task, batch = make_batch()
    grads = {}
    for detach in (False, True):
        module = IITModule(task, IITConfig(in_batch_sources=True, detach_sources=detach, behaviour_weight=0.0))
        loss = module.compute_losses(batch, torch.Generator().manual_seed(2))["iit"]
        grads[detach] = torch.autograd.grad(loss, module.network.model.layers[0][0].weight)[0]
    assert not torch.allclose(grads[False], grads[True])
    # reference: the source activations as constants
    net = IITModule(task, IITConfig()).network.model
    perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(2))
    enc = task.encode_inputs
    with torch.no_grad():
        src = net.layers[0](enc(batch.base))[perm]
    on_s, on_z = batch.intervened[:, 0], batch.intervened[:, 1]

    def patch(m, a, o):
        o = o.clone()
        o[on_s, 0:8] = src[on_s, 0:8]
        o[on_z, 8:16] = src[on_z, 8:16]
        return o

    h = net.layers[0].register_forward_hook(patch)
    out = net(enc(batch.base))
    h.remove()
    x, y, z = (batch.base[k] for k in "xyz")
    label = torch.where(on_s, (x + y)[perm], x + y) + torch.where(on_z, z[perm], z)
    ref = torch.autograd.grad(F.cross_entropy(out, label), net.layers[0][0].weight)[0]
    assert torch.allclose(grads[True], ref, atol=1e-6)


def test_das_mode_freezes_the_network_and_strict_loss_uses_base_labels():
    task, batch = make_batch()
    module = IITModule(task, IITConfig(freeze_network=True, behaviour_weight=0.0))
    assert not any(p.requires_grad for p in module.network.parameters())
    with pytest.raises(ValueError, match="nothing to train"):
        module.configure_optimizers()

    class WithUnaligned(TinyDigitSum):
        def unaligned_coordinates(self):
            return [Coordinate("layers.1", Index.dims(0, 8)), Coordinate("layers.1", Index.dims(8, 16))]

    strict = IITModule(WithUnaligned(), IITConfig(strict_weight=1.0, iit_weight=0.0, behaviour_weight=0.0))
    losses = strict.compute_losses(batch, torch.Generator().manual_seed(3))
    assert losses["strict"] > 0 and losses["iit"] == 0 and losses["behaviour"] == 0


def test_evaluate_batch_per_variable_and_impact():
    task, batch = make_batch(n=64)
    module = IITModule(task)
    result = module.evaluate_batch(batch)
    assert set(result["by_variable"]) == {"S", "z"}
    ok, impactful = result["by_variable"]["z"]
    # intervening on z changes O exactly when the source's z differs from the base's
    assert torch.equal(impactful, batch.sources[0]["z"] != batch.base["z"])
    assert ok.dtype == torch.bool and ok.shape == (64,)


def test_interchange_accuracy_metric_against_direct_counts():
    metric = InterchangeAccuracy()
    correct = torch.tensor([True, False, True, True, False, True])
    impactful = torch.tensor([True, True, False, True, False, False])
    metric.update(correct[:3], impactful[:3])
    metric.update(correct[3:], impactful[3:])
    out = metric.compute()
    assert out["iia"].item() == pytest.approx(4 / 6)
    assert out["iia_impactful"].item() == pytest.approx(2 / 3)
    assert out["impactful_fraction"].item() == pytest.approx(3 / 6)


def test_setup_errors_are_raised_at_construction():
    class WrongVariable(TinyDigitSum):
        def alignments(self):
            return {"default": {"T": Coordinate("layers.0", Index.dims(0, 8))}}

    with pytest.raises(AlignmentError, match="unknown causal variable 'T'"):
        IITModule(WrongVariable())

    class NotAligned(TinyDigitSum):
        def candidate_variables(self):
            return ("S", "x")

    with pytest.raises(AlignmentError, match=r"\['x'\] are intervened on by the data but not aligned"):
        IITModule(NotAligned())

    class WrongWidth(TinyDigitSum):
        def build_network(self):
            net = super().build_network()
            net.head = torch.nn.Linear(16, 12)
            return net

    with pytest.raises(AlignmentError, match="predicts 12 classes but the causal output 'O' has 13 values"):
        IITModule(WrongWidth())

    with pytest.raises(AlignmentError, match="has no alignment 'nope'"):
        IITModule(TinyDigitSum(), IITConfig(alignment="nope"))
    with pytest.raises(ValueError, match="at least one of the loss weights"):
        IITConfig(behaviour_weight=0.0, iit_weight=0.0)


class _StrictTiny(TinyDigitSum):
    """TinyDigitSum with two unaligned coordinates for strict IIT."""

    def unaligned_coordinates(self):
        return [Coordinate("layers.1", Index.dims(8, 12)), Coordinate("layers.1", Index.dims(0, 4))]


@pytest.mark.parametrize("task_type", [_StrictTiny, _LearnedTiny])
def test_one_pass_step_equals_the_two_pass_step(task_type):
    """The default in-batch step runs the base batch and its intervened copies (IIT and strict
    IIT) as one forward; its losses and gradients are those of separate runs."""
    task, batch = make_batch(n=24, seed=7)
    task = task_type()
    results = []
    for one_pass in (True, False):
        torch.manual_seed(0)
        module = IITModule(task, IITConfig(strict_weight=0.5, one_pass=one_pass, seed=3))
        losses = module.compute_losses(batch, torch.Generator().manual_seed(8))
        params = [p for p in module.parameters() if p.requires_grad]
        results.append((losses, torch.autograd.grad(losses["total"], params, allow_unused=True)))
    (one, one_grads), (two, two_grads) = results
    assert set(one) == set(two)
    for name in two:
        torch.testing.assert_close(one[name], two[name], rtol=1e-5, atol=1e-6)
    assert one["iit"] > 0 and (one["strict"] > 0 or task_type is _LearnedTiny)
    for g, r in zip(one_grads, two_grads):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
