"""Compare two alignment hypotheses on the pairs that distinguish them.

Two hypotheses (a causal model and a variable each, over the same inputs) say what the output
should become when a neural intervention interchanges "their" variable. On most pairs they may
agree; only the pairs where their counterfactual labels differ tell them apart. There, the
intervened network's prediction agrees with one, the other, or neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from causal_models import CausalModel
from causal_models.data import CounterfactualBatch
from iit.errors import AlignmentError, unknown_name
from iit.interventions import Intervention
from iit.search.problem import SearchProblem
from iit.search.stats import wilson_interval

__all__ = ["Hypothesis", "HypothesisComparison", "compare_hypotheses"]


@dataclass(frozen=True)
class Hypothesis:
    """A causal model and the variable the neural intervention is claimed to interchange.

    Raises:
        AlignmentError: an unknown variable, or a model with more than one output.
    """

    name: str
    causal_model: CausalModel
    variable: str

    def __post_init__(self) -> None:
        if self.variable not in self.causal_model.variables:
            raise AlignmentError(unknown_name(self.variable, list(self.causal_model.variables), "causal variable"))
        if len(self.causal_model.outputs) != 1:
            raise AlignmentError(f"hypothesis {self.name!r}: the causal model needs exactly one output")

    def labels(self, batch: CounterfactualBatch) -> Tensor:
        """Counterfactual class indices ``[batch]`` when ``variable`` takes source 0's value."""
        n = len(batch)
        values = self.causal_model.interchange_per_row(
            batch.base, batch.sources[:1], (self.variable,), torch.ones(n, 1, dtype=torch.bool),
            torch.zeros(n, 1, dtype=torch.long),
        )
        output = self.causal_model.outputs[0]
        return self.causal_model.domain(output).index_of(values[output]).long()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class HypothesisComparison:
    """Agreement of the intervened network with each hypothesis.

    Attributes:
        names: the two hypotheses.
        n_pairs: all pairs.
        n_distinguishing: pairs whose counterfactual labels differ between the hypotheses.
        iia: IIA of each hypothesis on all pairs.
        agreement: on the distinguishing pairs, the fraction predicted as each hypothesis says.
        interval: Wilson intervals of ``agreement``.

    Raises:
        TypeError: a missing or unknown field (made by `compare_hypotheses`).
    """

    names: tuple[str, str]
    n_pairs: int
    n_distinguishing: int
    iia: tuple[float, float]
    agreement: tuple[float, float]
    interval: tuple[tuple[float, float], tuple[float, float]]

    @property
    def preferred(self) -> str | None:
        """The hypothesis whose agreement interval lies wholly above the other's (else ``None``)."""
        (lo_a, hi_a), (lo_b, hi_b) = self.interval
        if lo_a > hi_b:
            return self.names[0]
        if lo_b > hi_a:
            return self.names[1]
        return None


def compare_hypotheses(
    problem: SearchProblem,
    intervention: Intervention,
    batch: CounterfactualBatch,
    first: Hypothesis,
    second: Hypothesis,
    *,
    confidence: float = 0.95,
    batch_size: int = 1024,
) -> HypothesisComparison:
    """Run ``intervention`` (e.g. the best cell of a search) on ``batch`` (bases and source 0)
    and score it against both hypotheses, on all pairs and on the pairs that distinguish them.

    Raises:
        AlignmentError: no pair distinguishes the hypotheses (draw more pairs).
    """
    la, lb = first.labels(batch), second.labels(batch)
    preds = []
    was = intervention.training
    intervention.eval()
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            part = batch.select(torch.arange(start, min(start + batch_size, len(batch))))
            out = problem.model.intervene(
                problem.encode_inputs(part.base), [intervention], [problem.encode_inputs(part.sources[0])]
            )
            preds.append(problem.decode_output(out).argmax(-1))
    intervention.train(was)
    pred = torch.cat(preds)
    differ = la != lb
    n_diff = int(differ.sum())
    if n_diff == 0:
        raise AlignmentError(f"no pair of the {len(batch)} distinguishes {first.name!r} from {second.name!r}")
    ok_a, ok_b = int((pred == la)[differ].sum()), int((pred == lb)[differ].sum())
    return HypothesisComparison(
        (first.name, second.name), len(batch), n_diff,
        (float((pred == la).float().mean()), float((pred == lb).float().mean())),
        (ok_a / n_diff, ok_b / n_diff),
        (wilson_interval(ok_a, n_diff, confidence), wilson_interval(ok_b, n_diff, confidence)),
    )
