"""Featurizers against closed forms: round trips, DAS equivalence, PCA vs numpy SVD, SAE error
kept exactly, masks at 0/1 equal neuron interchanges, save / load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from iit import Coordinate, Index, Interchange, Interventionable
from iit.errors import InterventionError, InterventionShapeError
from iit.featurizers import (
    FeatureInterchange,
    IdentityFeaturizer,
    MaskedFeatureInterchange,
    PCAFeaturizer,
    RotationFeaturizer,
    SAEFeaturizer,
)
from iit.learned import LowRankRotatedInterchange, RotatedInterchange, Rotation
from iit.serialization import load_interventions, save_interventions

C = Coordinate("0", Index.all())


def _pair(d: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, d, generator=g), torch.randn(5, 3, d, generator=g)


def _sae(d: int = 6, m: int = 10, seed: int = 0) -> SAEFeaturizer:
    g = torch.Generator().manual_seed(seed)
    return SAEFeaturizer(torch.randn(d, m, generator=g), torch.randn(m, generator=g), torch.randn(m, d, generator=g), torch.randn(d, generator=g))


def test_identity_interchange_is_neuron_interchange() -> None:
    b, s = _pair()
    out = FeatureInterchange(C, IdentityFeaturizer(6), [1, 4])(b, s)
    want = b.clone()
    want[..., [1, 4]] = s[..., [1, 4]]
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)


def test_full_rotation_equals_das() -> None:
    b, s = _pair()
    rotation = Rotation(6, generator=torch.Generator().manual_seed(3))
    ours = FeatureInterchange(C, RotationFeaturizer(6, rotation=rotation), range(2, 5))(b, s)
    das = RotatedInterchange(C, rotation, (2, 5))(b, s)
    torch.testing.assert_close(ours, das, atol=1e-5, rtol=1e-5)
    # closed form, rotate / swap / rotate back
    r = rotation.matrix().detach().double()
    m = torch.tensor([0, 0, 1, 1, 1, 0.0], dtype=torch.float64)
    ref = ((1 - m) * (b.double() @ r) + m * (s.double() @ r)) @ r.T
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)


def test_low_rank_rotation_equals_low_rank_das_and_keeps_the_rest() -> None:
    b, s = _pair()
    rotation = Rotation(6, 2, generator=torch.Generator().manual_seed(4))
    feat = RotationFeaturizer(6, 2, rotation=rotation)
    ours = FeatureInterchange(C, feat, range(2))(b, s)
    torch.testing.assert_close(ours, LowRankRotatedInterchange(C, rotation)(b, s), atol=1e-5, rtol=1e-5)
    f, e = feat.featurize(b)
    assert f.shape == (5, 3, 2)
    torch.testing.assert_close(feat.inverse(f, e), b, atol=1e-6, rtol=0)


def test_pca_matches_numpy_svd() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) @ torch.randn(5, 5, generator=g) + 3.0
    pca = PCAFeaturizer.fit(x, k=3)
    xn = x.double().numpy()
    centred = xn - xn.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    v = vt[:3].T
    proj_ref, proj = v @ v.T, pca.components.double().numpy() @ pca.components.double().numpy().T
    np.testing.assert_allclose(proj, proj_ref, atol=1e-5)
    np.testing.assert_allclose(pca.explained_variance.numpy(), sv[:3] ** 2 / 199, rtol=1e-5)
    np.testing.assert_allclose(pca.mean.numpy(), xn.mean(0), rtol=1e-5)
    # each column matches numpy's up to sign, and the sign convention is deterministic
    np.testing.assert_allclose(np.abs(pca.components.numpy()), np.abs(v), atol=1e-5)
    assert torch.equal(PCAFeaturizer.fit(x, k=3).components, pca.components)
    # features are uncorrelated with the fitted variances
    f = pca.encode(x)
    np.testing.assert_allclose(np.cov(f.double().numpy().T), np.diag(sv[:3] ** 2 / 199), atol=1e-3, rtol=1e-4)
    with pytest.raises(InterventionError, match="k <= min"):
        PCAFeaturizer.fit(x, k=6)


def test_pca_interchange_changes_only_the_chosen_component() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 4, generator=g)
    pca = PCAFeaturizer.fit(x, k=4)
    b, s = x[:10], x[10:20]
    out = FeatureInterchange(C, pca, [0])(b, s)
    delta = pca.encode(out) - pca.encode(b)
    torch.testing.assert_close(delta[:, 0], (pca.encode(s) - pca.encode(b))[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(delta[:, 1:], torch.zeros(10, 3), atol=1e-5, rtol=0)


def test_sae_keeps_the_reconstruction_error_exactly() -> None:
    b, s = _pair()
    sae = _sae()
    f, e = sae.featurize(b)
    assert e.abs().max() > 0.1  # a poor SAE: the error is large
    torch.testing.assert_close(sae.inverse(f, e), b, atol=1e-5, rtol=0)
    every = range(sae.n_features)
    # source == base: nothing changes, bit for bit, whatever features are chosen
    assert torch.equal(FeatureInterchange(C, sae, every)(b, b), b)
    assert torch.equal(FeatureInterchange(C, sae, [0, 3])(b, b), b)
    # all features together with the error: exactly the source
    assert torch.equal(FeatureInterchange(C, sae, every, interchange_error=True)(b, s), s)
    # all features, base error kept: the SAE's reconstruction of the source plus the base's error
    torch.testing.assert_close(
        FeatureInterchange(C, sae, every)(b, s), sae.decode(sae.encode(s)) + e, atol=1e-4, rtol=1e-5
    )


def test_sae_jumprelu_and_bad_shapes() -> None:
    d, m = 4, 6
    g = torch.Generator().manual_seed(2)
    w_enc, w_dec = torch.randn(d, m, generator=g), torch.randn(m, d, generator=g)
    sae = SAEFeaturizer(w_enc, torch.zeros(m), w_dec, torch.zeros(d), activation="jumprelu", threshold=torch.full((m,), 0.5))
    h = torch.randn(7, d, generator=g)
    z = h @ w_enc
    torch.testing.assert_close(sae.encode(h), z * (z > 0.5))
    with pytest.raises(InterventionError, match="w_dec"):
        SAEFeaturizer(w_enc, torch.zeros(m), w_dec.T, torch.zeros(d))


@pytest.mark.parametrize("kind", ["sigmoid", "hard_concrete"])
def test_mask_at_zero_one_equals_neuron_interchange(kind: str) -> None:
    b, s = _pair()
    logits = torch.tensor([-50.0, 50, -50, 50, 50, -50])
    iv = MaskedFeatureInterchange(C, IdentityFeaturizer(6), kind, init=logits)  # type: ignore[arg-type]
    want = b.clone()
    want[..., [1, 3, 4]] = s[..., [1, 3, 4]]
    iv.train()
    torch.testing.assert_close(iv(b, s), want, atol=1e-5, rtol=0)  # saturated soft mask
    iv.eval()
    torch.testing.assert_close(iv(b, s), want, atol=1e-6, rtol=0)  # binary mask
    assert iv.selected() == (1, 3, 4) and iv.selected(2) == (1, 3)
    torch.testing.assert_close(iv.to_interchange()(b, s), want, atol=1e-6, rtol=0)


def test_mask_soft_weights_and_penalty() -> None:
    b, s = _pair(4)
    iv = MaskedFeatureInterchange(C, IdentityFeaturizer(4), init=torch.tensor([0.0, 1.0, -1.0, 2.0]), temperature=0.5)
    iv.train()
    m = torch.sigmoid(torch.tensor([0.0, 1.0, -1.0, 2.0]) / 0.5)
    torch.testing.assert_close(iv(b, s), b + m * (s - b), atol=1e-6, rtol=0)
    torch.testing.assert_close(iv.penalty(), m.sum())
    iv.penalty().backward()
    assert iv.logits.grad is not None and (iv.logits.grad > 0).all()
    hc = MaskedFeatureInterchange(C, IdentityFeaturizer(4), "hard_concrete", init=0.0)
    expected_l0 = 4 * torch.sigmoid(torch.tensor(-2 / 3 * float(np.log(0.1 / 1.1))))
    torch.testing.assert_close(hc.penalty(), expected_l0)
    torch.manual_seed(0)
    samples = torch.stack([hc.mask() for _ in range(4000)])
    assert ((samples == 0) | (samples == 1)).float().mean() > 0.1  # the stretch gives exact 0 / 1
    nonzero = (samples > 0).float().mean(0)
    torch.testing.assert_close(nonzero, torch.full((4,), float(expected_l0) / 4), atol=0.03, rtol=0)


def test_masked_rotation_trains_through_the_model() -> None:
    net = nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 2))
    model = Interventionable(net)
    coord = Coordinate("0", Index.all())
    iv = MaskedFeatureInterchange(coord, RotationFeaturizer(6, generator=torch.Generator().manual_seed(0)))
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    out = model.intervene(x, [iv], [y])
    out.sum().backward()
    assert iv.logits.grad is not None and iv.featurizer.rotation.weight is not None
    assert all(p.grad is not None for p in iv.parameters())


def test_errors_name_what_is_wrong() -> None:
    with pytest.raises(InterventionError, match="outside"):
        FeatureInterchange(C, IdentityFeaturizer(4), [4])
    with pytest.raises(InterventionError, match="distinct"):
        FeatureInterchange(C, IdentityFeaturizer(4), [1, 1])
    with pytest.raises(InterventionShapeError, match="d=4"):
        FeatureInterchange(C, IdentityFeaturizer(4), [1])(torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(InterventionError, match="hard_concrete"):
        MaskedFeatureInterchange(C, IdentityFeaturizer(4), "gumbel")  # type: ignore[arg-type]


def test_used_in_an_alignment_matches_plain_interchange() -> None:
    from causal_models import standard
    from iit.alignment import Alignment

    causal = standard.digit_sum(3)
    alignment = Alignment(causal, {"S": FeatureInterchange(Coordinate("0", Index.all()), IdentityFeaturizer(6), [0, 1])})
    assert alignment.interventions("S")[0].features == (0, 1)
    net = Interventionable(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)))
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    got = net.intervene(x, list(alignment.interventions("S")), [y])
    want = net.intervene(x, [Interchange(Coordinate("0", Index.dims(0, 2)))], [y])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_save_and_load_every_featurizer(tmp_path) -> None:
    net = Interventionable(nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 2)))
    coord = Coordinate("0", Index.all())
    g = torch.Generator().manual_seed(5)
    ivs = {
        "neurons": FeatureInterchange(coord, IdentityFeaturizer(6), [2, 5]),
        "das": FeatureInterchange(coord, RotationFeaturizer(6, 3, generator=g), range(3)),
        "pca": FeatureInterchange(coord, PCAFeaturizer.fit(torch.randn(50, 6, generator=g), 4), [0, 1]),
        "sae": FeatureInterchange(coord, _sae(), [1, 7], interchange_error=True),
        "mask": MaskedFeatureInterchange(coord, RotationFeaturizer(6, generator=g), "hard_concrete", init=torch.randn(6, generator=g)),
    }
    path = tmp_path / "ivs.safetensors"
    save_interventions(path, ivs)
    loaded = load_interventions(path, net)
    b, s = _pair()
    for name, iv in ivs.items():
        iv.eval(), loaded[name].eval()
        assert type(loaded[name]) is type(iv)
        torch.testing.assert_close(loaded[name](b, s), iv(b, s), atol=0, rtol=0, msg=name)
