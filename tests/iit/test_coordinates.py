"""Index read / write against plain advanced indexing (clone + setitem) as the reference."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iit import Coordinate, Index


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 4),
    seq=st.integers(2, 6),
    d=st.integers(2, 6),
    data=st.data(),
)
def test_index_read_write_match_plain_indexing(batch, seq, d, data):
    hidden = torch.randn(batch, seq, d)
    kind = data.draw(st.sampled_from(["dims", "box", "positions", "rowpos", "mask", "shared_mask", "slices"]))
    ref = hidden.clone()
    if kind == "dims":
        lo = data.draw(st.integers(0, d - 1))
        hi = data.draw(st.integers(lo + 1, d))
        index, key = Index.dims(lo, hi), (slice(None), slice(None), slice(lo, hi))
    elif kind == "box":
        p0 = data.draw(st.integers(0, seq - 1))
        p1 = data.draw(st.integers(p0, seq - 1))
        d0 = data.draw(st.integers(0, d - 1))
        d1 = data.draw(st.integers(d0, d - 1))
        index, key = Index.box((p0, d0), (p1, d1)), (slice(None), slice(p0, p1 + 1), slice(d0, d1 + 1))
    elif kind == "slices":
        dims = data.draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))
        index, key = Index.slices(None, dims), (slice(None), slice(None), dims)
    elif kind == "positions":
        pos = data.draw(st.lists(st.integers(0, seq - 1), min_size=1, max_size=seq, unique=True))
        lo = data.draw(st.integers(0, d - 1))
        index, key = Index.positions(pos, dims=(lo, d)), (slice(None), pos, slice(lo, d))
    elif kind == "rowpos":
        pos = torch.stack([torch.randperm(seq)[:2] for _ in range(batch)]) if seq >= 2 else None
        index = Index.positions(pos)
        values = torch.randn(batch, 2, d)
        assert torch.equal(index.read(hidden), torch.stack([hidden[r, pos[r]] for r in range(batch)]))
        for r in range(batch):
            ref[r, pos[r]] = values[r]
        assert torch.equal(index.write(hidden, values), ref)
        return
    else:
        shape = (batch, seq, d) if kind == "mask" else (seq, d)
        mask = torch.rand(shape) < 0.5
        index = Index.mask(mask)
        full = mask if kind == "mask" else mask.expand(batch, seq, d)
        read = index.read(hidden)
        assert torch.equal(read.reshape(-1), hidden[full])
        values = torch.randn_like(read)
        ref[full] = values.reshape(-1)
        assert torch.equal(index.write(hidden, values), ref)
        return
    index.check(hidden.shape, "test")
    read = index.read(hidden)
    assert torch.equal(read, hidden[key])
    values = torch.randn_like(read)
    ref[key] = values
    assert torch.equal(index.write(hidden, values), ref)


def test_coordinates_are_values_usable_as_keys():
    a = Coordinate("h.1", Index.dims(0, 4))
    b = Coordinate("h.1", Index.dims(0, 4))
    assert a == b and hash(a) == hash(b)
    assert a != Coordinate("h.1", Index.dims(0, 5))
    assert a.describe() == "h.1.output[dims 0:4]"
    assert Coordinate("h", Index.box((1, 0), (2, 3))).describe() == "h.output[:, 1:3, 0:4]"
