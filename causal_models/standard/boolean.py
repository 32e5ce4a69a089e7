"""Boolean circuits built from a tiny program of assignments.

Each line (or ``;``-separated statement) ``name = expression`` defines a boolean variable whose
parents are the names its expression uses. Names never assigned are inputs. Expressions use ``&``,
``|``, ``^``, ``~`` (or ``and``, ``or``, ``not``), parentheses and ``True``/``False``.

Examples:
    >>> import torch
    >>> m = boolean_circuit("A = a & b; O = A | ~c")
    >>> m.inputs, m.intermediates, m.outputs
    (['a', 'b', 'c'], ['A'], ['O'])
    >>> t = lambda *v: torch.tensor(v)
    >>> m.run({"a": t(True, False), "b": t(True, True), "c": t(True, True)})["O"].tolist()
    [True, False]
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from causal_models.domains import FiniteDomain
from causal_models.errors import GraphError
from causal_models.model import CausalModel

__all__ = ["boolean_circuit", "and_or_not"]

_Fn = Callable[[dict[str, Tensor]], Tensor]


def _compile(node: ast.expr, used: list[str], text: str) -> _Fn:
    """Compile a boolean expression into ``f(env) -> bool [batch]``.

    Names are appended to ``used`` in order of first use (they become the parents); ``text`` is the
    expression shown in error messages.

    Raises:
        GraphError: an operator or construct outside names, ``True``/``False``, ``&``, ``|``, ``^``,
            ``~``, ``and``, ``or``, ``not`` and parentheses.
    """
    if isinstance(node, ast.Name):
        if node.id not in used:
            used.append(node.id)
        name = node.id
        return lambda env: env[name]
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        value = node.value
        first = used  # constants broadcast explicitly to the batch of the first parent

        def const(env: dict[str, Tensor]) -> Tensor:
            ref = env[first[0]]
            return torch.full_like(ref, value, dtype=torch.bool)

        return const
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert):
        inner = _compile(node.operand, used, text)
        return lambda env: ~inner(env)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr | ast.BitXor):
        left, right = _compile(node.left, used, text), _compile(node.right, used, text)
        if isinstance(node.op, ast.BitAnd):
            return lambda env: left(env) & right(env)
        if isinstance(node.op, ast.BitOr):
            return lambda env: left(env) | right(env)
        return lambda env: left(env) ^ right(env)
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, used, text) for v in node.values]
        is_and = isinstance(node.op, ast.And)

        def fold(env: dict[str, Tensor]) -> Tensor:
            out = parts[0](env)
            for p in parts[1:]:
                out = (out & p(env)) if is_and else (out | p(env))
            return out

        return fold
    raise GraphError(
        f"unsupported syntax {ast.dump(node)!r} in {text!r}; use names, True/False, "
        "&, |, ^, ~, and, or, not, parentheses"
    )


def boolean_circuit(
    program: str, outputs: Sequence[str] | None = None, name: str = "boolean circuit"
) -> CausalModel:
    """Build a boolean causal model from ``name = expression`` statements.

    Every variable has the domain ``FiniteDomain.boolean()``; mechanisms act on bool tensors
    ``[batch]``.

    Args:
        program: Statements separated by newlines or ``;``. A bare expression (no ``=``) defines
            ``O``.
        outputs: Output variables (default: the last assigned variable).
        name: Model name.

    Returns:
        The causal model.

    Raises:
        GraphError: a syntax error, an unsupported operator, a statement that is not an assignment
            to one name, a variable assigned twice, an expression that uses only constants, a
            variable used before it is assigned (a cycle), or an empty program.
        UnknownVariableError: an output that is not a variable.

    Examples:
        >>> m = boolean_circuit("(a | b) & ~c")
        >>> m.parents("O"), m.outputs
        (('a', 'b', 'c'), ['O'])
    """
    try:
        tree = ast.parse(program.strip())
    except SyntaxError as exc:
        raise GraphError(f"cannot parse boolean program {program!r}: {exc.msg}") from exc
    if not tree.body:
        raise GraphError("empty boolean program")
    spec: dict[str, tuple] = {}
    assigned: list[str] = []
    inputs: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and len(tree.body) == 1:
            target, value = "O", stmt.value
        elif (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            target, value = stmt.targets[0].id, stmt.value
        else:
            raise GraphError(
                f"each statement must be 'name = expression', got {ast.unparse(stmt)!r}"
            )
        if target in assigned:
            raise GraphError(f"variable {target!r} is assigned twice")
        text = ast.unparse(value)
        used: list[str] = []
        fn = _compile(value, used, text)
        if not used:
            raise GraphError(
                f"{target} = {text} uses no variable; constants are not supported here"
            )
        parents = tuple(used)

        def mechanism(*args: Tensor, _fn: _Fn = fn, _parents: tuple[str, ...] = parents) -> Tensor:
            return _fn(dict(zip(_parents, args, strict=True)))

        spec[target] = (parents, mechanism, FiniteDomain.boolean())
        assigned.append(target)
        for p in parents:
            if p not in assigned and p not in inputs:
                inputs.append(p)
    both = [p for p in inputs if p in assigned]
    if both:
        raise GraphError(f"variables used before they are assigned (a cycle?): {both}")
    full = {i: ((), None, FiniteDomain.boolean()) for i in inputs}
    full.update(spec)
    return CausalModel.from_mapping(full, outputs=list(outputs or [assigned[-1]]), name=name)


def and_or_not(k: int) -> CausalModel:
    """A generic k-input circuit: ``A = x0 & ... & x{m-1}``, ``B = x{m} | ... | x{k-1}`` with
    ``m = ceil(k / 2)``, and ``O = A & ~B``.

    Args:
        k: Number of inputs ``x0 .. x{k-1}``.

    Returns:
        The causal model ``"and-or-not (k inputs)"``.

    Raises:
        GraphError: ``k`` is not an int >= 2.

    Examples:
        >>> m = and_or_not(3)
        >>> m.parents("A"), m.parents("B"), m.parents("O")
        (('x0', 'x1'), ('x2',), ('A', 'B'))
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise GraphError(f"and_or_not needs k >= 2 inputs, got {k!r}")
    m = (k + 1) // 2
    xs = [f"x{i}" for i in range(k)]
    program = f"A = {' & '.join(xs[:m])}\nB = {' | '.join(xs[m:])}\nO = A & ~B"
    return boolean_circuit(program, name=f"and-or-not ({k} inputs)")
