"""The `CausalModel`: a DAG of variables with domains and batched mechanisms.

Each node of a ``networkx.DiGraph`` is a `Variable`: a domain (the values it can take) and, unless
it is an input, a mechanism computing it from its parents' values. Inputs are the roots without a
mechanism; outputs are designated by name. Running, ``do`` and interchange interventions act on
whole batches (tensors ``[batch, *domain.shape]``); `causal_models.engine` does the evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
from torch import Tensor

from causal_models import engine
from causal_models.domains import Domain
from causal_models.errors import GraphError, UnknownVariableError, unknown_name_message

__all__ = ["Variable", "CausalModel", "Mechanism", "VariableKind"]

Mechanism = Callable[..., Any]
VariableKind = Literal["input", "constant", "intermediate", "output"]


@dataclass(frozen=True)
class Variable:
    """One variable of a causal model.

    Args:
        name: Unique, non-empty name.
        domain: The values it takes for one example (a `Domain`: `FiniteDomain`, `IntegerRange`,
            `RealDomain`).
        parents: Names of the parents, in the order the mechanism receives them; ``()`` for inputs
            and constants.
        mechanism: ``None`` for an input. Otherwise, with ``vectorized=True``:
            ``f(*parent_values) -> Tensor`` where each parent value is ``[batch, *parent.shape]``
            and the result must be ``[batch, *domain.shape]``. With ``vectorized=False``:
            ``f(*row_values) -> value`` applied per row (scalar parents arrive as Python numbers or
            bools, tensor parents as ``[*shape]`` tensors; the result is converted to
            ``domain.dtype``). A root with a mechanism is a *constant*: ``f()`` returns one value
            ``[*domain.shape]`` (or a Python scalar) used for every row.
        vectorized: Whether the mechanism acts on whole batches (fast) or on single rows
            (prototyping).

    Raises:
        GraphError: an empty or non-string name, a domain that is not a `Domain`, parents that are
            not a tuple of distinct names, a mechanism that is not callable, or parents without a
            mechanism.
        TypeError: an unknown field.

    Examples:
        >>> from causal_models import IntegerRange, Variable
        >>> Variable("S", IntegerRange(0, 19), ("x", "y"), lambda x, y: x + y).is_input
        False
        >>> Variable("x", IntegerRange(0, 10)).is_input
        True
    """

    name: str
    domain: Domain
    parents: tuple[str, ...] = ()
    mechanism: Mechanism | None = None
    vectorized: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GraphError(f"variable names must be non-empty strings, got {self.name!r}")
        if not isinstance(self.domain, Domain):
            raise GraphError(
                f"domain of {self.name!r} must be a Domain (FiniteDomain, IntegerRange, RealDomain), "
                f"got {type(self.domain).__name__}"
            )
        if isinstance(self.parents, str) or not all(isinstance(p, str) for p in self.parents):
            raise GraphError(
                f"parents of {self.name!r} must be a tuple of names, got {self.parents!r}"
            )
        object.__setattr__(self, "parents", tuple(self.parents))
        if len(set(self.parents)) != len(self.parents):
            raise GraphError(f"parents of {self.name!r} repeat a name: {self.parents!r}")
        if self.mechanism is not None and not callable(self.mechanism):
            raise GraphError(f"mechanism of {self.name!r} is not callable: {self.mechanism!r}")
        if self.parents and self.mechanism is None:
            raise GraphError(
                f"{self.name!r} has parents {self.parents!r} but no mechanism; give a mechanism, "
                "or no parents to make it an input"
            )

    @property
    def is_input(self) -> bool:
        """Whether the variable is an input: a root without a mechanism."""
        return not self.parents and self.mechanism is None


class CausalModel:
    """A deterministic causal model over a DAG, evaluated on batches.

    `CausalModel.from_mapping` and `CausalModel.from_graph` are the usual ways to build one.

    Args:
        variables: The variables, in any order (ties in the topological order follow this order).
        outputs: Names of the output variables.
        name: Display name.

    Raises:
        GraphError: an element that is not a `Variable`, duplicate names, ``outputs`` empty, a plain
            string or repeating a name, a parent that is not a variable (nearest names listed), a
            cycle (named), no input, or an output not reachable from any input.
        UnknownVariableError: an output name that is not a variable.

    Examples:
        >>> import torch
        >>> from causal_models import CausalModel, IntegerRange
        >>> m = CausalModel.from_mapping({
        ...     "x": ((), None, IntegerRange(0, 10)),
        ...     "y": ((), None, IntegerRange(0, 10)),
        ...     "S": (("x", "y"), lambda x, y: x + y, IntegerRange(0, 19)),
        ... }, outputs=["S"])
        >>> m.inputs, m.outputs
        (['x', 'y'], ['S'])
        >>> m.run({"x": torch.tensor([1, 2]), "y": torch.tensor([3, 4])})["S"].tolist()
        [4, 6]
    """

    def __init__(
        self, variables: Sequence[Variable], outputs: Sequence[str], name: str = "causal model"
    ) -> None:
        self.name = name
        self._vars: dict[str, Variable] = {}
        for v in variables:
            if not isinstance(v, Variable):
                raise GraphError(f"expected Variable objects, got {type(v).__name__}")
            if v.name in self._vars:
                raise GraphError(f"duplicate variable name {v.name!r}")
            self._vars[v.name] = v
        if isinstance(outputs, str) or len(outputs) == 0:
            raise GraphError(f"outputs must be a non-empty sequence of names, got {outputs!r}")
        for o in outputs:
            if o not in self._vars:
                raise UnknownVariableError(unknown_name_message(o, self._vars, "output variable"))
        if len(set(outputs)) != len(outputs):
            raise GraphError(f"outputs repeat a name: {list(outputs)!r}")
        for v in self._vars.values():
            for p in v.parents:
                if p not in self._vars:
                    raise GraphError(
                        f"parent {p!r} of {v.name!r} is not a variable: "
                        + unknown_name_message(p, self._vars)
                    )
        graph = nx.DiGraph(name=name)
        for v in self._vars.values():
            graph.add_node(
                v.name,
                domain=v.domain,
                mechanism=v.mechanism,
                vectorized=v.vectorized,
                parents=v.parents,
            )
        for v in self._vars.values():
            for p in v.parents:
                graph.add_edge(p, v.name)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle is not None:
            names = [u for u, _ in cycle] + [cycle[0][0]]
            raise GraphError(f"the graph has a cycle: {' -> '.join(names)}")
        order = {n: i for i, n in enumerate(self._vars)}
        self._topo: list[str] = list(nx.lexicographical_topological_sort(graph, key=order.get))
        self._inputs = [n for n in self._topo if self._vars[n].is_input]
        if not self._inputs:
            raise GraphError("the model has no input (a root variable without mechanism)")
        self._outputs = list(outputs)
        for o in self._outputs:
            if o not in self._inputs and not (nx.ancestors(graph, o) & set(self._inputs)):
                raise GraphError(
                    f"output {o!r} is not reachable from any input ({', '.join(self._inputs)}); "
                    "it only depends on constants"
                )
        self._depth: dict[str, int] = {}
        for n in self._topo:
            ps = self._vars[n].parents
            self._depth[n] = 1 + max(self._depth[p] for p in ps) if ps else 0
        for n in self._topo:
            graph.nodes[n]["kind"] = self.kind(n)
            graph.nodes[n]["depth"] = self._depth[n]
        self._graph = nx.freeze(graph)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(
        cls,
        spec: Mapping[str, tuple[Any, ...]],
        outputs: Sequence[str],
        name: str = "causal model",
    ) -> CausalModel:
        """Build a model from ``{var: (parents, mechanism, domain[, vectorized])}``.

        Inputs are ``((), None, domain)``. See `Variable` for the mechanism contract.

        Args:
            spec: One entry per variable: ``(parents, mechanism, domain)`` or
                ``(parents, mechanism, domain, vectorized)``; the order of the entries breaks ties
                in the topological order.
            outputs: Names of the output variables.
            name: Display name.

        Returns:
            The causal model.

        Raises:
            GraphError: an entry that is not a 3- or 4-tuple, a ``vectorized`` flag that is not a
                bool, parents given as a string, or any graph problem listed in `CausalModel`.
            UnknownVariableError: an output name that is not a variable.

        Examples:
            >>> from causal_models import CausalModel, FiniteDomain, IntegerRange
            >>> m = CausalModel.from_mapping(
            ...     {
            ...         "a": ((), None, IntegerRange(0, 5)),
            ...         "big": (("a",), lambda a: a >= 3, FiniteDomain.boolean()),
            ...     },
            ...     outputs=["big"],
            ...     name="threshold",
            ... )
            >>> m
            CausalModel(name='threshold', inputs=['a'], outputs=['big'], variables=2)
        """
        variables = []
        for var, entry in spec.items():
            if not isinstance(entry, tuple) or len(entry) not in (3, 4):
                raise GraphError(
                    f"entry of {var!r} must be (parents, mechanism, domain[, vectorized]), "
                    f"got {entry!r}"
                )
            parents, mechanism, domain = entry[:3]
            vectorized = entry[3] if len(entry) == 4 else True
            if not isinstance(vectorized, bool):
                raise GraphError(f"vectorized flag of {var!r} must be a bool, got {vectorized!r}")
            if isinstance(parents, str):
                raise GraphError(
                    f"parents of {var!r} must be a tuple of names, got the string {parents!r}"
                )
            variables.append(Variable(var, domain, tuple(parents), mechanism, vectorized))
        return cls(variables, outputs, name)

    @classmethod
    def from_graph(
        cls, graph: nx.DiGraph, outputs: Sequence[str], name: str | None = None
    ) -> CausalModel:
        """Build a model from a DAG whose nodes carry attributes.

        Node attributes: ``domain`` (required), ``mechanism`` (``None`` or absent for inputs),
        ``vectorized`` (default ``True``), ``parents`` (optional tuple fixing the argument order;
        default: the order of ``graph.predecessors(node)``; must name exactly the predecessors).

        Args:
            graph: The DAG (a ``networkx.DiGraph``, not a multigraph).
            outputs: Names of the output variables.
            name: Display name (default: the graph's ``name`` attribute, else ``"causal model"``).

        Returns:
            The causal model.

        Raises:
            GraphError: ``graph`` is not a ``DiGraph``, a node lacks a ``domain``, ``parents``
                disagrees with the edges, or any graph problem listed in `CausalModel`.
            UnknownVariableError: an output name that is not a node.

        Examples:
            >>> import networkx as nx
            >>> from causal_models import CausalModel, IntegerRange
            >>> g = nx.DiGraph([("x", "y")])
            >>> g.nodes["x"]["domain"] = IntegerRange(0, 4)
            >>> g.nodes["y"].update(domain=IntegerRange(0, 8), mechanism=lambda x: 2 * x)
            >>> CausalModel.from_graph(g, outputs=["y"]).parents("y")
            ('x',)
        """
        if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
            raise GraphError(f"expected a networkx.DiGraph, got {type(graph).__name__}")
        variables = []
        for node, attrs in graph.nodes(data=True):
            if "domain" not in attrs:
                raise GraphError(f"node {node!r} has no 'domain' attribute")
            preds = tuple(graph.predecessors(node))
            parents = tuple(attrs.get("parents", preds))
            if set(parents) != set(preds) or len(parents) != len(preds):
                raise GraphError(
                    f"node {node!r}: 'parents' attribute {parents!r} must name exactly its "
                    f"predecessors {preds!r}"
                )
            variables.append(
                Variable(
                    str(node),
                    attrs["domain"],
                    tuple(str(p) for p in parents),
                    attrs.get("mechanism"),
                    attrs.get("vectorized", True),
                )
            )
        return cls(
            variables, [str(o) for o in outputs], name or graph.graph.get("name") or "causal model"
        )

    # ------------------------------------------------------------------ structure
    @property
    def variables(self) -> list[str]:
        """All variable names in topological order (ties: declaration order)."""
        return list(self._topo)

    @property
    def inputs(self) -> list[str]:
        """Input variables (roots without a mechanism), in topological order."""
        return list(self._inputs)

    @property
    def outputs(self) -> list[str]:
        """Output variables, in the order given."""
        return list(self._outputs)

    @property
    def intermediates(self) -> list[str]:
        """Variables that are neither inputs, constants nor outputs (topological order)."""
        return [n for n in self._topo if self.kind(n) == "intermediate"]

    @property
    def graph(self) -> nx.DiGraph:
        """The frozen DAG.

        Nodes carry the attributes ``domain``, ``mechanism``, ``vectorized``, ``parents``, ``kind``
        and ``depth``.
        """
        return self._graph

    def _check(self, var: str) -> Variable:
        """The `Variable` called ``var``; raises `UnknownVariableError` for an unknown name."""
        try:
            return self._vars[var]
        except (KeyError, TypeError):
            raise UnknownVariableError(unknown_name_message(var, self._topo)) from None

    def variable(self, var: str) -> Variable:
        """The `Variable` called ``var``.

        Args:
            var: A variable name.

        Returns:
            Its `Variable` (domain, parents, mechanism).

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        return self._check(var)

    def parents(self, var: str) -> tuple[str, ...]:
        """Parents of ``var`` in mechanism-argument order.

        Args:
            var: A variable name.

        Returns:
            The parent names (``()`` for inputs and constants).

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        return self._check(var).parents

    def children(self, var: str) -> list[str]:
        """Children of ``var``.

        Args:
            var: A variable name.

        Returns:
            The children's names, in topological order.

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        self._check(var)
        kids = set(self._graph.successors(var))
        return [n for n in self._topo if n in kids]

    def domain(self, var: str) -> Domain:
        """Domain of ``var``.

        Args:
            var: A variable name.

        Returns:
            Its `Domain`.

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        return self._check(var).domain

    def kind(self, var: str) -> VariableKind:
        """Kind of ``var``: ``"input"``, ``"constant"``, ``"output"`` or ``"intermediate"``.

        Args:
            var: A variable name.

        Returns:
            The kind; an output that is also an input reports ``"input"``.

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        v = self._check(var)
        if v.is_input:
            return "input"
        if not v.parents:
            return "constant"
        return "output" if var in self._outputs else "intermediate"

    def depth(self, var: str) -> int:
        """Length of the longest path from a root to ``var``.

        Args:
            var: A variable name.

        Returns:
            The depth (roots: 0).

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        self._check(var)
        return self._depth[var]

    def ancestors(self, var: str) -> set[str]:
        """All variables with a path to ``var``.

        Args:
            var: A variable name.

        Returns:
            Their names (``var`` excluded).

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        self._check(var)
        return set(nx.ancestors(self._graph, var))

    def descendants(self, var: str) -> set[str]:
        """All variables reachable from ``var``.

        Args:
            var: A variable name.

        Returns:
            Their names (``var`` excluded).

        Raises:
            UnknownVariableError: ``var`` is not a variable of the model (the nearest names are
                listed).
        """
        self._check(var)
        return set(nx.descendants(self._graph, var))

    def has_path(self, source: str, target: str) -> bool:
        """Whether ``target`` depends on ``source``.

        Args:
            source: A variable name.
            target: A variable name.

        Returns:
            ``True`` when there is a directed path from ``source`` to ``target``
            (``source == target`` counts).

        Raises:
            UnknownVariableError: ``source`` or ``target`` is not a variable of the model.

        Examples:
            >>> from causal_models import standard
            >>> m = standard.digit_sum()
            >>> m.has_path("x", "O"), m.has_path("z", "S")
            (True, False)
        """
        self._check(source)
        self._check(target)
        return source == target or nx.has_path(self._graph, source, target)

    def describe(self) -> str:
        """A text table of every variable: kind, parents, domain and depth (also ``str(model)``).

        Returns:
            The table, one line per variable in topological order, under a header line.

        Examples:
            >>> from causal_models import standard
            >>> print(standard.digit_sum().describe())
            CausalModel 'digit sum': 5 variables; inputs x, y, z; outputs O
              variable  kind          parents  domain               depth
              x         input         -        IntegerRange(0, 10)  0
              y         input         -        IntegerRange(0, 10)  0
              z         input         -        IntegerRange(0, 10)  0
              S         intermediate  x, y     IntegerRange(0, 19)  1
              O         output        S, z     IntegerRange(0, 28)  2
        """
        rows = [("variable", "kind", "parents", "domain", "depth")]
        for n in self._topo:
            v = self._vars[n]
            mech = "" if v.vectorized or v.mechanism is None else " (per-row)"
            rows.append(
                (
                    n,
                    self.kind(n) + mech,
                    ", ".join(v.parents) or "-",
                    repr(v.domain),
                    str(self._depth[n]),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        head = (
            f"CausalModel {self.name!r}: {len(self._topo)} variables; "
            f"inputs {', '.join(self._inputs)}; outputs {', '.join(self._outputs)}"
        )
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        return "\n".join([head, *("  " + ln for ln in lines)])

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return (
            f"CausalModel(name={self.name!r}, inputs={self._inputs}, outputs={self._outputs}, "
            f"variables={len(self._topo)})"
        )

    # ------------------------------------------------------------------ evaluation
    def run(self, inputs: Mapping[str, Tensor], validate: bool = True) -> dict[str, Tensor]:
        """Evaluate every variable on a batch.

        Args:
            inputs: ``{input: [batch, *shape]}`` for every input variable.
            validate: Check the inputs' dtypes and values, and the mechanism outputs' values,
                against their domains (shapes, and the dtypes of mechanism outputs, are always
                checked).

        Returns:
            ``{var: [batch, *shape]}`` for every variable, in topological order.

        Raises:
            CausalModelError: ``inputs`` is not a mapping.
            UnknownVariableError: a key of ``inputs`` is not an input variable.
            MissingInputError: an input variable has no value.
            BatchShapeError: the inputs differ in batch size.
            DomainError: a value that is not a tensor ``[batch, *shape]``, or (with ``validate``) a
                value of another dtype kind or outside its domain; the message names the row.
            MechanismError: a mechanism raised, or returned a value of the wrong shape or dtype (or,
                with ``validate``, outside its domain).

        Examples:
            >>> import torch
            >>> from causal_models import standard
            >>> m = standard.digit_sum()
            >>> values = m.run({"x": torch.tensor([1, 2]), "y": torch.tensor([3, 4]),
            ...                 "z": torch.tensor([5, 5])})
            >>> list(values), values["S"].tolist(), values["O"].tolist()
            (['x', 'y', 'z', 'S', 'O'], [4, 6], [9, 11])
        """
        return engine.evaluate(self, inputs, {}, None, validate=validate)

    def do(
        self,
        inputs: Mapping[str, Tensor],
        interventions: Mapping[str, Tensor],
        rows: Mapping[str, Tensor] | None = None,
        validate: bool = True,
    ) -> dict[str, Tensor]:
        """Run with ``do(var <- value)``.

        Each intervened variable takes the given values instead of its mechanism (or input); its
        descendants recompute.

        Args:
            inputs: ``{input: [batch, *shape]}`` for every input variable.
            interventions: ``{var: [batch, *shape]}`` values, checked against the variable's domain.
            rows: Optional ``{var: bool [batch]}``: intervene on ``var`` only in these rows (every
                key must be intervened).
            validate: As in `CausalModel.run`.

        Returns:
            Every variable's value ``{var: [batch, *shape]}`` under the intervention.

        Raises:
            CausalModelError: ``inputs`` is not a mapping.
            UnknownVariableError: a key of ``inputs`` is not an input variable.
            MissingInputError: an input variable has no value.
            BatchShapeError: the inputs differ in batch size.
            DomainError: an input or intervention value that is not a tensor ``[batch, *shape]``, or
                (with ``validate``) a value of another dtype kind or outside its domain; the message
                names the row.
            MechanismError: a mechanism raised, or returned a value of the wrong shape or dtype (or,
                with ``validate``, outside its domain).
            InterventionSpecError: ``interventions`` is not a mapping, or a row mask that is not a
                bool tensor or is given for a variable that is not intervened.

        Examples:
            >>> import torch
            >>> from causal_models import standard
            >>> m = standard.digit_sum()  # S = x + y, O = S + z
            >>> t = torch.tensor
            >>> inputs = {"x": t([1, 2]), "y": t([3, 4]), "z": t([5, 5])}
            >>> m.do(inputs, {"S": torch.tensor([0, 9])})["O"].tolist()
            [5, 14]
            >>> only_first = {"S": torch.tensor([True, False])}
            >>> m.do(inputs, {"S": torch.tensor([0, 9])}, rows=only_first)["O"].tolist()
            [5, 11]
        """
        return engine.evaluate(self, inputs, interventions, rows, validate=validate)

    def interchange(
        self,
        base: Mapping[str, Tensor],
        sources: Sequence[Mapping[str, Tensor]],
        variables: Mapping[str, int],
        rows: Mapping[str, Tensor] | None = None,
        validate: bool = True,
    ) -> dict[str, Tensor]:
        """Interchange intervention ``H_{V_i <- H(s_i)[V_i]}(b)``.

        Each intervened variable ``var`` takes the value it has when the model runs (without
        intervention) on ``sources[variables[var]]``; every other variable follows its mechanism, so
        intervened values override the mechanisms of intervened descendants.

        Args:
            base: ``{input: [batch, *shape]}`` for every input variable.
            sources: Source inputs, each ``{input: [batch, *shape]}`` with the base's batch size.
            variables: ``{var: source index}``: which source gives each intervened variable.
            rows: Optional ``{var: bool [batch]}``; rows where the mask is ``False`` keep the base
                mechanism.
            validate: As in `CausalModel.run`.

        Returns:
            Every variable's counterfactual value ``{var: [batch, *shape]}``.

        Raises:
            CausalModelError: the base or a source is not a mapping.
            UnknownVariableError: a key of the base or of a source is not an input variable, or an
                intervened variable is not a variable of the model.
            MissingInputError: an input variable has no value in the base or in a source.
            BatchShapeError: the base, the sources and the row masks differ in batch size.
            DomainError: an input value that is not a tensor ``[batch, *shape]``, or (with
                ``validate``) one of another dtype kind or outside its domain; the message names the
                row.
            MechanismError: a mechanism raised, or returned a value of the wrong shape or dtype (or,
                with ``validate``, outside its domain).
            InterventionSpecError: ``sources`` is not a sequence, ``variables`` is not a mapping, a
                source index out of range, or a row mask that is not a bool tensor or is given for a
                variable that is not intervened.

        Examples:
            >>> import torch
            >>> from causal_models import standard
            >>> m = standard.digit_sum()  # S = x + y, O = S + z
            >>> t = torch.tensor
            >>> base = {"x": t([1, 2]), "y": t([3, 4]), "z": t([5, 5])}
            >>> source = {"x": t([9, 0]), "y": t([9, 0]), "z": t([0, 0])}
            >>> m.interchange(base, [source], {"S": 0})["O"].tolist()  # S from the source
            [23, 5]
        """
        return engine.interchange(self, base, sources, variables, rows, validate=validate)

    def interchange_per_row(
        self,
        base: Mapping[str, Tensor],
        sources: Sequence[Mapping[str, Tensor]],
        variables: Sequence[str],
        intervened: Tensor,
        source_index: Tensor,
        validate: bool = True,
    ) -> dict[str, Tensor]:
        """Interchange where each row chooses its intervened variables and their sources.

        Args:
            base: ``{input: [batch, *shape]}`` for every input variable.
            sources: Source inputs, each ``{input: [batch, *shape]}`` with the base's batch size.
            variables: Candidate variables ``V`` (the columns of the two tensors below).
            intervened: bool ``[batch, len(V)]``: whether row ``i`` intervenes on ``V[j]``.
            source_index: int64 ``[batch, len(V)]``: which source gives ``V[j]`` in row ``i``
                (ignored where not intervened; ``-1`` is conventional there).
            validate: As in `CausalModel.run`.

        Returns:
            Every variable's counterfactual value ``{var: [batch, *shape]}``.

        Raises:
            CausalModelError: the base or a source is not a mapping.
            UnknownVariableError: a key of the base or of a source is not an input variable, or a
                candidate variable is not a variable of the model.
            MissingInputError: an input variable has no value in the base or in a source.
            BatchShapeError: the base, the sources, ``intervened`` and ``source_index`` differ in
                batch size.
            DomainError: an input value that is not a tensor ``[batch, *shape]``, or (with
                ``validate``) one of another dtype kind or outside its domain; the message names the
                row.
            MechanismError: a mechanism raised, or returned a value of the wrong shape or dtype (or,
                with ``validate``, outside its domain).
            InterventionSpecError: ``sources`` is not a sequence, the candidates repeat a name,
                ``intervened`` is not a bool tensor, ``source_index`` is not an integer tensor, or
                an intervened row uses a source index out of range.

        Examples:
            >>> import torch
            >>> from causal_models import standard
            >>> m = standard.digit_sum()  # S = x + y, O = S + z
            >>> t = torch.tensor
            >>> base = {"x": t([1, 2]), "y": t([3, 4]), "z": t([5, 5])}
            >>> source = {"x": t([9, 0]), "y": t([9, 0]), "z": t([0, 0])}
            >>> intervened = torch.tensor([[True, False], [False, True]])  # row 0: S, row 1: z
            >>> source_index = torch.tensor([[0, -1], [-1, 0]])
            >>> out = m.interchange_per_row(base, [source], ["S", "z"], intervened, source_index)
            >>> out["O"].tolist()
            [23, 6]
        """
        return engine.interchange_per_row(
            self, base, sources, variables, intervened, source_index, validate=validate
        )
