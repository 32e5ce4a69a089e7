"""Hierarchical equality (Geiger et al.; the pyvene DAS tutorial; the CS224u IIT notebook).

``W``, ``X``, ``Y``, ``Z`` are entity vectors ``[batch, emb_dim]``; ``WX = (W == X)``,
``YZ = (Y == Z)`` (exact equality of whole vectors); ``O = (WX == YZ)``. Entities come from an
`EntityPool`; a fresh, disjoint pool tests generalisation to unseen entities.
`EqualityPatternSampler` draws the four patterns (WX, YZ) in {TT, TF, FT, FF} (AABB, AABC, ABCC,
ABCD) in equal proportions.

Examples:
    >>> import torch
    >>> from causal_models import CounterfactualConfig, CounterfactualGenerator
    >>> train, test = make_entity_pools(train_size=20, test_size=8, emb_dim=2, seed=0)
    >>> config = CounterfactualConfig(variables=("WX", "YZ"))
    >>> sampler = EqualityPatternSampler(train)
    >>> gen = CounterfactualGenerator(hierarchical_equality(2), config, sampler, seed=0)
    >>> batch = gen.generate(8)
    >>> batch.base["W"].shape, batch.counterfactual_output.dtype
    (torch.Size([8, 2]), torch.bool)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from causal_models.domains import FiniteDomain, RealDomain
from causal_models.errors import DomainError, SamplingError
from causal_models.model import CausalModel

__all__ = ["hierarchical_equality", "EntityPool", "make_entity_pools", "EqualityPatternSampler"]


def _same(a: Tensor, b: Tensor) -> Tensor:
    """Whether whole vectors are equal: ``[batch, emb_dim]`` twice -> bool ``[batch]``."""
    return (a == b).all(dim=-1)


def _eq(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise ``a == b``."""
    return a == b


def hierarchical_equality(emb_dim: int = 2, low: float = -1.0, high: float = 1.0) -> CausalModel:
    """The hierarchical-equality model over entity vectors in ``[low, high]^emb_dim``.

    Inputs ``W``, ``X``, ``Y``, ``Z``: ``RealDomain((emb_dim,), low, high)``, values
    ``[batch, emb_dim]``; ``WX``, ``YZ`` and the output ``O`` are booleans ``[batch]``.

    Args:
        emb_dim: Entity dimension.
        low: Lower bound of every entity element.
        high: Upper bound of every entity element.

    Returns:
        The causal model ``"hierarchical equality"``.

    Raises:
        DomainError: ``emb_dim`` is not an int >= 1, a bound is not finite, or ``low > high``.

    Examples:
        >>> import torch
        >>> m = hierarchical_equality(emb_dim=2)
        >>> a, b = torch.tensor([[0.1, 0.2]]), torch.tensor([[0.3, 0.4]])
        >>> m.run({"W": a, "X": a, "Y": b, "Z": b})["O"].tolist()
        [True]
    """
    if isinstance(emb_dim, bool) or not isinstance(emb_dim, int) or emb_dim < 1:
        raise DomainError(f"emb_dim must be an int >= 1, got {emb_dim!r}")
    e = RealDomain((emb_dim,), low, high)
    b = FiniteDomain.boolean()
    return CausalModel.from_mapping(
        {
            "W": ((), None, e),
            "X": ((), None, e),
            "Y": ((), None, e),
            "Z": ((), None, e),
            "WX": (("W", "X"), _same, b),
            "YZ": (("Y", "Z"), _same, b),
            "O": (("WX", "YZ"), _eq, b),
        },
        outputs=["O"],
        name="hierarchical equality",
    )


@dataclass(frozen=True)
class EntityPool:
    """A set of distinct entity vectors ``[pool_size, emb_dim]`` (``pool_size >= 4``).

    Args:
        vectors: The entities, float ``[pool_size, emb_dim]``, finite and distinct rows.

    Raises:
        DomainError: ``vectors`` is not a 2-D float tensor with at least 4 distinct, finite rows.
        TypeError: a missing or unknown field.

    Examples:
        >>> import torch
        >>> pool = EntityPool(torch.eye(4))
        >>> pool.size, pool.emb_dim
        (4, 4)
    """

    vectors: Tensor

    def __post_init__(self) -> None:
        v = self.vectors
        if not isinstance(v, Tensor) or v.dim() != 2 or not v.dtype.is_floating_point:
            raise DomainError("EntityPool needs a float tensor [pool_size, emb_dim]")
        if v.shape[0] < 4:
            raise DomainError(f"EntityPool needs >= 4 entities (pattern ABCD), got {v.shape[0]}")
        if not bool(torch.isfinite(v).all()):
            raise DomainError("EntityPool vectors must be finite")
        if torch.unique(v, dim=0).shape[0] != v.shape[0]:
            raise DomainError("EntityPool vectors must be distinct (entities compare by equality)")

    @property
    def size(self) -> int:
        """Number of entities."""
        return int(self.vectors.shape[0])

    @property
    def emb_dim(self) -> int:
        """Entity dimension."""
        return int(self.vectors.shape[1])

    @classmethod
    def random(
        cls,
        size: int,
        emb_dim: int,
        generator: torch.Generator | None = None,
        low: float = -1.0,
        high: float = 1.0,
        exclude: EntityPool | None = None,
    ) -> EntityPool:
        """Draw a pool of random entities.

        The entities are uniform in ``[low, high)^emb_dim``, distinct from each other and from every
        entity of ``exclude`` (a fresh pool for testing on unseen entities).

        Args:
            size: Number of entities (at least 4).
            emb_dim: Entity dimension.
            generator: Random generator (default: torch's global one).
            low: Lower bound of every element.
            high: Upper bound of every element.
            exclude: A pool whose entities must not be drawn.

        Returns:
            The pool, vectors ``[size, emb_dim]``.

        Raises:
            DomainError: ``exclude`` has another ``emb_dim``, or ``size < 4``.
            SamplingError: ``size`` distinct new entities could not be drawn in 100 attempts (a tiny
                interval, or ``exclude`` covering it).
        """
        if exclude is not None and exclude.emb_dim != emb_dim:
            raise DomainError(f"exclude has emb_dim {exclude.emb_dim}, expected {emb_dim}")
        vecs = low + (high - low) * torch.rand(size, emb_dim, generator=generator)
        for _ in range(100):
            bad = torch.zeros(size, dtype=torch.bool)
            if exclude is not None:
                bad |= (vecs.unsqueeze(1) == exclude.vectors.unsqueeze(0)).all(-1).any(1)
            _, inverse = torch.unique(vecs, dim=0, return_inverse=True)
            first = torch.zeros(size, dtype=torch.bool)
            seen: set[int] = set()
            for i, u in enumerate(inverse.tolist()):
                first[i] = u not in seen
                seen.add(u)
            bad |= ~first
            if not bool(bad.any()):
                return cls(vecs)
            vecs[bad] = low + (high - low) * torch.rand(
                int(bad.sum()), emb_dim, generator=generator
            )
        raise SamplingError(f"could not draw {size} distinct entities in [{low}, {high})^{emb_dim}")


def make_entity_pools(
    train_size: int = 1000, test_size: int = 100, emb_dim: int = 2, seed: int = 0
) -> tuple[EntityPool, EntityPool]:
    """A training pool and a disjoint test pool of unseen entities (seeded).

    Args:
        train_size: Entities in the training pool.
        test_size: Entities in the test pool.
        emb_dim: Entity dimension.
        seed: Seed of the draw: the same seed gives the same pools.

    Returns:
        ``(train, test)``, vectors ``[train_size, emb_dim]`` and ``[test_size, emb_dim]``, no entity
        in both.

    Raises:
        DomainError: a size below 4.
        SamplingError: the entities could not be drawn distinct.

    Examples:
        >>> train, test = make_entity_pools(train_size=20, test_size=8, emb_dim=2, seed=0)
        >>> train.vectors.shape, test.vectors.shape
        (torch.Size([20, 2]), torch.Size([8, 2]))
    """
    g = torch.Generator().manual_seed(seed)
    train = EntityPool.random(train_size, emb_dim, g)
    return train, EntityPool.random(test_size, emb_dim, g, exclude=train)


class EqualityPatternSampler:
    """Sample ``W``, ``X``, ``Y``, ``Z`` from an entity pool (an `InputSampler` for
    `hierarchical_equality`).

    Args:
        pool: Entities to draw from.
        balanced: ``True``: each row draws a pattern (WX, YZ) uniformly from the four, then 4
            distinct entities A, B, C, D, and sets ``W=A, X=A if WX else B, Y=C, Z=C if YZ else D``.
            ``False``: four entities drawn independently and uniformly (equalities are rare).

    Raises:
        TypeError: a missing or unknown argument.

    Examples:
        >>> import torch
        >>> train, _ = make_entity_pools(train_size=20, test_size=8, emb_dim=2, seed=0)
        >>> x = EqualityPatternSampler(train)(1000, torch.Generator().manual_seed(0))
        >>> x["W"].shape
        torch.Size([1000, 2])
        >>> round(float((x["W"] == x["X"]).all(-1).float().mean()), 2)  # about half the rows
        0.47
    """

    def __init__(self, pool: EntityPool, balanced: bool = True) -> None:
        self.pool = pool
        self.balanced = balanced

    def __call__(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw ``n`` inputs.

        Args:
            n: Number of examples.
            generator: The random generator to draw from.

        Returns:
            ``{"W": [n, emb_dim], "X": [n, emb_dim], "Y": [n, emb_dim], "Z": [n, emb_dim]}``.
        """
        size = self.pool.size
        idx = torch.randint(0, size, (n, 4), generator=generator)
        if self.balanced:
            dup = (idx.sort(dim=1).values.diff(dim=1) == 0).any(dim=1)
            while bool(dup.any()):
                idx[dup] = torch.randint(0, size, (int(dup.sum()), 4), generator=generator)
                dup = (idx.sort(dim=1).values.diff(dim=1) == 0).any(dim=1)
            pattern = torch.randint(0, 4, (n,), generator=generator)
            wx, yz = pattern >= 2, pattern % 2 == 1
            idx[:, 1] = torch.where(wx, idx[:, 0], idx[:, 1])
            idx[:, 3] = torch.where(yz, idx[:, 2], idx[:, 3])
        v = self.pool.vectors[idx]  # [n, 4, emb_dim]
        return {"W": v[:, 0], "X": v[:, 1], "Y": v[:, 2], "Z": v[:, 3]}
