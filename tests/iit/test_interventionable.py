"""Interventionable against hand-written PyTorch hooks (written here, independently)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iit import (
    Addition,
    ConstantAblation,
    Coordinate,
    Index,
    Interchange,
    Interventionable,
    MeanAblation,
    ResampleAblation,
    ZeroAblation,
)
from tests.conftest import make_gpt2


# ----------------------------------------------------------------------------- hand-written reference
def record(model: nn.Module, module: nn.Module, x, select=lambda o: o):
    """Full forward on x storing `module`'s output with a raw hook."""
    store = {}
    handle = module.register_forward_hook(lambda m, a, o: store.__setitem__("v", select(o)))
    try:
        model(x)
    finally:
        handle.remove()
    return store["v"]


def patched(model: nn.Module, x, patches: dict[nn.Module, callable]):
    """Forward on x where each module's output is replaced by fn(output) (clone + setitem)."""
    handles = [m.register_forward_hook(lambda mod, a, o, fn=fn: fn(o)) for m, fn in patches.items()]
    try:
        return model(x)
    finally:
        for h in handles:
            h.remove()


def set_slice(idx, value):
    def fn(o):
        o = o.clone()
        o[idx] = value
        return o

    return fn


# ----------------------------------------------------------------------------- plain behaviour
def test_forward_is_bit_for_bit(mlp, gpt2):
    x = torch.randn(5, 4)
    assert torch.equal(Interventionable(mlp)(x), mlp(x))
    ids = torch.randint(0, 64, (3, 7))
    assert torch.equal(Interventionable(gpt2)(input_ids=ids).logits, gpt2(input_ids=ids).logits)


def test_parameters_and_state_dict_are_the_models_plus_registered_interventions(mlp):
    wrapped = Interventionable(mlp)
    assert [p for p in wrapped.parameters()] == [p for p in mlp.parameters()]
    assert list(wrapped.state_dict()) == ["model." + k for k in mlp.state_dict()]
    steer = Addition(Coordinate("layers.0"), nn.Parameter(torch.zeros(8)))
    wrapped.add_intervention("steer", steer)
    assert len(list(wrapped.parameters())) == len(list(mlp.parameters())) + 1
    assert "interventions.steer.vector" in wrapped.state_dict()


def test_wrapping_and_intervening_leave_mode_flags_and_hooks_alone(mlp):
    mlp.eval()
    mlp.head.weight.requires_grad_(False)
    user_calls = []
    user_handle = mlp.layers[0].register_forward_hook(lambda m, a, o: user_calls.append(1))
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    wrapped = Interventionable(mlp)
    assert not wrapped.training and not mlp.training
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    wrapped.intervene(x, [Interchange(Coordinate("layers.0"))], sources=[y])
    assert not mlp.training
    assert not mlp.head.weight.requires_grad and mlp.layers[0][0].weight.requires_grad
    assert len(mlp.layers[0]._forward_hooks) == 1  # only the user's hook remains
    assert user_calls == [1, 1]  # source run + base run, user hook untouched
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    user_handle.remove()


# ----------------------------------------------------------------------------- equality with raw hooks
def test_interchange_dims_equals_raw_hooks(mlp):
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    src = record(mlp, mlp.layers[0], y)
    ref = patched(mlp, x, {mlp.layers[0]: set_slice((slice(None), slice(2, 6)), src[:, 2:6])})
    out = Interventionable(mlp).intervene(x, [Interchange(Coordinate("layers.0", Index.dims(2, 6)))], [y])
    assert torch.equal(out, ref)


def test_multi_source_multi_coordinate_equals_raw_hooks(mlp):
    x, y1, y2 = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 4)
    s1 = record(mlp, mlp.layers[0], y1)
    s2 = record(mlp, mlp.layers[1], y2)
    ref = patched(
        mlp,
        x,
        {
            mlp.layers[0]: set_slice((slice(None), slice(0, 4)), s1[:, :4]),
            mlp.layers[1]: set_slice((slice(None), slice(4, 8)), s2[:, 4:]),
        },
    )
    # note: the source-2 value at layer 1 comes from an unpatched run on y2
    ivs = [
        Interchange(Coordinate("layers.0", Index.dims(0, 4)), source=0),
        Interchange(Coordinate("layers.1", Index.dims(4, 8)), source=1),
    ]
    out = Interventionable(mlp).intervene(x, ivs, sources=[y1, y2])
    assert torch.equal(out, ref)


def test_seed004_identity_anchors_equal_raw_hooks(anchored):
    x, y = torch.randn(5, 3, 5), torch.randn(5, 3, 5)
    src_b = record(anchored, anchored.b, y)
    src_d = record(anchored, anchored.d, y)
    ref = patched(anchored, x, {anchored.b: lambda o: src_b, anchored.d: lambda o: src_d})
    wrapped = Interventionable(anchored)
    out = wrapped.intervene(x, [Interchange(Coordinate("b")), Interchange(Coordinate("d"))], [y])
    assert torch.equal(out, ref)
    # rectangular slice between two corners of the anchor's [batch, 6] state
    ref_box = patched(anchored, x, {anchored.e: set_slice((slice(None), slice(1, 4)), record(anchored, anchored.e, y)[:, 1:4])})
    out_box = wrapped.intervene(x, [Interchange(Coordinate("e", Index.box((1,), (3,))))], [y])
    assert torch.equal(out_box, ref_box)


def test_ablations_and_addition_equal_raw_hooks(mlp):
    x = torch.randn(6, 4)
    wrapped = Interventionable(mlp)
    coord = Coordinate("layers.1", Index.dims(1, 5))
    sl = (slice(None), slice(1, 5))
    assert torch.equal(wrapped.intervene(x, [ZeroAblation(coord)]), patched(mlp, x, {mlp.layers[1]: set_slice(sl, 0.0)}))
    const = torch.arange(4.0)
    assert torch.equal(
        wrapped.intervene(x, [ConstantAblation(coord, const)]), patched(mlp, x, {mlp.layers[1]: set_slice(sl, const)})
    )
    reference = torch.randn(20, 4)
    mean = record(mlp, mlp.layers[1], reference)[:, 1:5].mean(0)
    mean_iv = MeanAblation.fit(wrapped, reference, coord)
    assert torch.allclose(mean_iv.value, mean)
    assert torch.allclose(wrapped.intervene(x, [mean_iv]), patched(mlp, x, {mlp.layers[1]: set_slice(sl, mean)}))
    vec = torch.randn(4)
    ref_add = patched(mlp, x, {mlp.layers[1]: lambda o: torch.cat([o[:, :1], o[:, 1:5] + 2.0 * vec, o[:, 5:]], 1)})
    assert torch.allclose(wrapped.intervene(x, [Addition(coord, vec, scale=2.0)]), ref_add)


def test_resample_ablation_draws_rows_from_the_pool(mlp):
    x = torch.randn(6, 4)
    wrapped = Interventionable(mlp)
    coord = Coordinate("layers.0")
    pool = wrapped.collect(torch.randn(10, 4), [coord])[coord]
    iv = ResampleAblation(coord, pool, seed=3)
    out = wrapped.intervene(x, [iv])
    picks = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, patched(mlp, x, {mlp.layers[0]: lambda o: pool[picks]}))


def test_gpt2_interchange_ablation_addition_equal_raw_hooks(gpt2):
    ids_x, ids_y = torch.randint(0, 64, (3, 6)), torch.randint(0, 64, (3, 6))
    block = gpt2.transformer.h[0]
    src = record(gpt2, block, ids_y)
    wrapped = Interventionable(gpt2)
    # residual stream after block 0 at positions 1 and 4
    coord = Coordinate("transformer.h.0", Index.positions([1, 4]))
    ref = patched(gpt2, ids_x, {block: set_slice((slice(None), [1, 4]), src[:, [1, 4]])}).logits
    out = wrapped.intervene(ids_x, [Interchange(coord)], [ids_y]).logits
    assert torch.equal(out, ref)
    # zero the attention output (element 0 of the attention module's tuple output)
    attn = block.attn
    ref_zero = patched(gpt2, ids_x, {attn: lambda o: (torch.zeros_like(o[0]),) + tuple(o[1:])}).logits
    out_zero = wrapped.intervene(ids_x, [ZeroAblation(Coordinate("transformer.h.0.attn", output=0))]).logits
    assert torch.equal(out_zero, ref_zero)
    vec = torch.randn(32)
    ref_add = patched(gpt2, ids_x, {gpt2.transformer.h[1]: lambda o: o + vec}).logits
    out_add = wrapped.intervene(ids_x, [Addition(Coordinate("transformer.h.1", Index.all()), vec.expand(6, 32).clone())]).logits
    assert torch.allclose(out_add, ref_add, atol=1e-6)


def test_dict_inputs_and_model_output_selectors(gpt2):
    ids_x, ids_y = torch.randint(0, 64, (2, 5)), torch.randint(0, 64, (2, 5))
    wrapped = Interventionable(gpt2)
    # read the final hidden state from the `transformer` module's ModelOutput by key
    coord = Coordinate("transformer", output="last_hidden_state")
    acts = wrapped.collect({"input_ids": ids_y}, [coord])
    assert torch.equal(acts[coord], gpt2.transformer(ids_y).last_hidden_state)
    out = wrapped.intervene({"input_ids": ids_x}, [Interchange(coord)], [{"input_ids": ids_y}])
    assert torch.allclose(out.logits, gpt2(ids_y).logits)


def test_input_coordinates_use_pre_hooks(mlp):
    x, y = torch.randn(4, 4), torch.randn(4, 4)
    wrapped = Interventionable(mlp)
    coord = Coordinate("head", io="input")
    h_y = record(mlp, mlp.layers[1], y)
    assert torch.equal(wrapped.collect(y, [coord])[coord], h_y)
    # replacing the head's input with the source's gives the source output
    assert torch.equal(wrapped.intervene(x, [Interchange(coord)], [y]), mlp(y))


def test_per_row_positions_and_masks(gpt2):
    ids_x, ids_y = torch.randint(0, 64, (3, 6)), torch.randint(0, 64, (3, 6))
    block = gpt2.transformer.h[0]
    src = record(gpt2, block, ids_y)
    pos = torch.tensor([[0], [3], [5]])

    def per_row(o):
        o = o.clone()
        for r in range(3):
            o[r, pos[r, 0]] = src[r, pos[r, 0]]
        return o

    wrapped = Interventionable(gpt2)
    out = wrapped.intervene(ids_x, [Interchange(Coordinate("transformer.h.0", Index.positions(pos)))], [ids_y])
    assert torch.equal(out.logits, patched(gpt2, ids_x, {block: per_row}).logits)
    mask = torch.zeros(3, 6, 32, dtype=torch.bool)
    for r in range(3):
        mask[r, pos[r, 0]] = True
    out_mask = wrapped.intervene(ids_x, [Interchange(Coordinate("transformer.h.0", Index.mask(mask)))], [ids_y])
    assert torch.equal(out_mask.logits, out.logits)
    shared = torch.zeros(6, 32, dtype=torch.bool)
    shared[2, :5] = True
    out_shared = wrapped.intervene(ids_x, [Interchange(Coordinate("transformer.h.0", Index.mask(shared)))], [ids_y])
    ref_shared = patched(gpt2, ids_x, {block: set_slice((slice(None), 2, slice(0, 5)), src[:, 2, :5])})
    assert torch.equal(out_shared.logits, ref_shared.logits)


def test_row_restricted_interventions_mix_variables_in_one_batch(mlp):
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    rows_a = torch.tensor([True, False, True, False, False, True])
    a = Coordinate("layers.0", Index.dims(0, 4))
    b = Coordinate("layers.0", Index.dims(4, 8))
    wrapped = Interventionable(mlp)
    out = wrapped.intervene(x, [Interchange(a).where(rows_a), Interchange(b).where(~rows_a)], [y])
    only_a = wrapped.intervene(x, [Interchange(a)], [y])
    only_b = wrapped.intervene(x, [Interchange(b)], [y])
    assert torch.equal(out[rows_a], only_a[rows_a])
    assert torch.equal(out[~rows_a], only_b[~rows_a])


def test_activations_stand_in_for_source_runs(mlp):
    x, y = torch.randn(6, 4), torch.randn(6, 4)
    wrapped = Interventionable(mlp)
    coord = Coordinate("layers.1", Index.dims(0, 3))
    direct = wrapped.intervene(x, [Interchange(coord)], [y])
    cached = wrapped.intervene(x, [Interchange(coord)], [wrapped.collect(y, [coord])])
    assert torch.equal(direct, cached)
    # in-batch sources: row i takes its source from row perm[i] of the base batch itself
    perm = torch.tensor([5, 0, 1, 2, 3, 4])
    output, acts = wrapped.collect(x, [coord], return_output=True)
    assert torch.equal(output, mlp(x))
    in_batch = wrapped.intervene(x, [Interchange(coord)], [acts.rows(perm)])
    assert torch.equal(in_batch, wrapped.intervene(x, [Interchange(coord)], [x[perm]]))


def test_source_run_stops_after_the_last_needed_layer():
    model = make_gpt2(n_layer=4)
    calls = {i: 0 for i in range(4)}
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1)) for i, b in enumerate(model.transformer.h)]
    head_calls = []
    handles.append(model.lm_head.register_forward_hook(lambda m, a, o: head_calls.append(1)))
    ids = torch.randint(0, 64, (2, 5))
    try:
        Interventionable(model).intervene(ids, [Interchange(Coordinate("transformer.h.1"))], [ids])
    finally:
        for h in handles:
            h.remove()
    assert calls == {0: 2, 1: 2, 2: 1, 3: 1}  # blocks 2, 3 ran only in the base run
    assert head_calls == [1]  # the LM head ran once (base)


def test_interchanging_the_whole_last_hidden_layer_gives_the_source_output(mlp):
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    out = Interventionable(mlp).intervene(x, [Interchange(Coordinate("layers.1"))], [y])
    assert torch.equal(out, mlp(y))


@pytest.mark.parametrize("layer", [0, 1])
def test_gpt2_interchange_equals_pyvene(layer):
    pyvene = pytest.importorskip("pyvene")
    model = make_gpt2()
    ids_x, ids_y = torch.randint(0, 64, (3, 6)), torch.randint(0, 64, (3, 6))
    config = pyvene.IntervenableConfig(
        representations=[pyvene.RepresentationConfig(layer, "block_output")],
        intervention_types=pyvene.VanillaIntervention,
    )
    pv = pyvene.IntervenableModel(config, model)
    _, pv_out = pv({"input_ids": ids_x}, [{"input_ids": ids_y}])
    ours = Interventionable(model).intervene(
        {"input_ids": ids_x}, [Interchange(Coordinate(f"transformer.h.{layer}"))], [{"input_ids": ids_y}]
    )
    assert torch.allclose(ours.logits, pv_out.logits, atol=1e-6)
    assert not torch.allclose(ours.logits, model(ids_x).logits, atol=1e-3)  # the patch is real


def test_module_changes_between_calls_are_seen(mlp):
    """The wrapper keeps its module table between calls; a submodule replaced, added or removed
    (or a new wrapped model) is used / refused exactly as a fresh wrapper would."""
    from iit.errors import CoordinateError

    net = Interventionable(mlp)
    x = torch.randn(5, 4)
    coord = Coordinate("layers.1")
    first = net.collect(x, [coord])[coord]
    assert torch.equal(first, record(mlp, mlp.layers[1], x))
    # replaced: values come from the new module, no hook is left on the old one
    old = mlp.layers[1]
    mlp.layers[1] = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    replaced = net.collect(x, [coord])[coord]
    assert torch.equal(replaced, record(mlp, mlp.layers[1], x))
    assert not torch.equal(replaced, first)
    assert not old._forward_hooks and not mlp.layers[1]._forward_hooks
    # a module that did not exist when the table was built
    mlp.head = nn.Sequential(nn.Identity(), mlp.head)
    added = Coordinate("head.0", Index.dims(0, 2))
    out = net.intervene(x, [Interchange(added)], [2 * x])
    source_h1 = record(mlp, mlp.layers[1], 2 * x)
    ref = patched(mlp, x, {mlp.head[0]: set_slice((slice(None), slice(0, 2)), source_h1[:, 0:2])})
    assert torch.equal(out, ref)
    # removed: refused before any forward, naming what exists now
    del mlp.head
    mlp.head = nn.Linear(8, 3)
    with pytest.raises(CoordinateError, match="head.0"):
        net.collect(x, [added])
    assert "head.0" not in net._module_table() and "head" in net._module_table()
    # another wrapped model
    other = type(mlp)()
    net.model = other
    assert torch.equal(net.collect(x, [coord])[coord], record(other, other.layers[1], x))
