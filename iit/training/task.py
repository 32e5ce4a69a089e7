"""`IITTask`: everything a training run needs besides hyper-parameters — a causal model, a
network, named alignment hypotheses, how causal inputs become network inputs, and samplers.

Ready tasks live in the ``tasks`` package; write your own by subclassing:

```python
class MyTask(IITTask):
    def causal_model(self): return standard.digit_sum(9)
    def build_network(self): return MyMLP()
    def alignments(self): return {"default": {"S": Coordinate("h1", Index.dims(0, 32))}}
    def encode_inputs(self, values): return torch.stack([values[k] for k in "xyz"], 1)
```
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from causal_models import CausalModel, CounterfactualConfig, IndependentSampler
from causal_models.data import InputSampler
from iit.alignment import AlignedTo, Alignment
from iit.errors import AlignmentError
from iit.hooks import Inputs, call_model
from iit.interventionable import Interventionable
from iit.outputs import output_tensor
from iit.training.inputs import check_encoded_inputs
from iit.training.objectives import TaskKind

__all__ = ["IITTask"]


class IITTask(ABC):
    """Data + causal model + network + alignment for interchange intervention training.

    Subclasses implement the four abstract methods; the others have defaults.
    Attributes ``kind`` (``"classification"`` / ``"regression"``) and ``name`` may be
    overridden as class attributes.

    Raises:
        TypeError: instantiating a subclass that does not implement the four abstract methods
            (`causal_model`, `build_network`, `alignments`, `encode_inputs`).
    """

    kind: TaskKind = "classification"
    name: str = "task"

    # ------------------------------------------------------------------ required
    @abstractmethod
    def causal_model(self) -> CausalModel:
        """The high-level causal model (built once per call; keep it cheap)."""

    @abstractmethod
    def build_network(self) -> nn.Module:
        """A freshly initialised network."""

    @abstractmethod
    def alignments(self) -> Mapping[str, Mapping[str, AlignedTo]]:
        """Named alignment hypotheses ``{name: {variable: coordinates / interventions}}``;
        ``"default"`` is the one trained."""

    @abstractmethod
    def encode_inputs(self, values: Mapping[str, Tensor]) -> Inputs:
        """Network inputs for causal input values ``{input: [batch, ...]}``."""

    # ------------------------------------------------------------------ defaults
    def candidate_variables(self) -> Sequence[str]:
        """Variables intervened on during training (default: every aligned variable of the
        default alignment)."""
        return list(self.alignments()["default"])

    def counterfactual_config(self) -> CounterfactualConfig:
        """How counterfactual pairs are drawn (default: one candidate variable per row)."""
        return CounterfactualConfig(variables=tuple(self.candidate_variables()))

    def train_sampler(self, model: CausalModel) -> InputSampler:
        """Sampler of training inputs (default: uniform over input domains)."""
        return IndependentSampler(model)

    def eval_sampler(self, model: CausalModel) -> InputSampler:
        """Sampler of held-out inputs (default: the training sampler)."""
        return self.train_sampler(model)

    def unaligned_coordinates(self) -> Sequence[Any]:
        """Neural coordinates outside the alignment, resample-ablated by strict IIT."""
        return ()

    def decode_output(self, output: Any) -> Tensor:
        """Predictions ``[batch, classes]`` from the network output (default: the output tensor
        or ``.logits``)."""
        return output_tensor(output)

    def labels(self, model: CausalModel, values: Tensor) -> Tensor:
        """Class indices ``[batch]`` for output values (classification), or the values as float
        targets (regression)."""
        if self.kind == "regression":
            return values.float()
        domain = model.domain(self.output_variable(model))
        return domain.index_of(values).long()

    def output_variable(self, model: CausalModel) -> str:
        """The causal output the network predicts (default: the model's only output).

        Args:
            model: the task's causal model.

        Raises:
            AlignmentError: the model has several outputs (override this method to pick one).
        """
        if len(model.outputs) != 1:
            raise AlignmentError(f"the causal model has outputs {model.outputs}; override output_variable()")
        return model.outputs[0]

    def wrap_network(self, network: nn.Module) -> Interventionable:
        """How the network is wrapped for interventions (default: `iit.Interventionable`;
        return a `iit.transformers.TransformerInterventionable` or your own subclass to
        align in its coordinate system)."""
        return Interventionable(network)

    # ------------------------------------------------------------------ helpers
    def alignment(self, model: CausalModel, name: str = "default") -> Alignment:
        """Build the named alignment.

        Raises:
            AlignmentError: an unknown name (listing the task's alignments).
        """
        hypotheses = self.alignments()
        if name not in hypotheses:
            raise AlignmentError(f"task {self.name!r} has no alignment {name!r}; it has {list(hypotheses)}")
        return Alignment(model, hypotheses[name], output=self.output_variable(model))

    def check(
        self, network: Interventionable, model: CausalModel, alignment: Alignment, *, for_training: bool = True
    ) -> None:
        """Setup-time checks: the alignment resolves on the network, covers every candidate
        variable (when ``for_training``), and the network's output size matches the causal
        output domain.

        Raises:
            IITError: ``encode_inputs`` returns inputs of a dtype or shape the network does not
                take (naming the method and what the first layer expects).
            AlignmentError, CoordinateError: with what is wrong and what would be valid.
        """
        if for_training:
            alignment.require_aligned(self.candidate_variables())
        example = self.train_sampler(model)(4, torch.Generator().manual_seed(0))
        inputs = self.encode_inputs(example)
        check_encoded_inputs(network, inputs, f"{type(self).__name__}.encode_inputs")
        alignment.check(network, inputs)
        if self.kind == "classification":
            domain = model.domain(self.output_variable(model))
            size = getattr(domain, "size", None)
            with torch.no_grad():
                logits = self.decode_output(call_model(network, inputs))
            if size is not None and logits.shape[-1] != size:
                raise AlignmentError(
                    f"the network predicts {logits.shape[-1]} classes but the causal output "
                    f"{self.output_variable(model)!r} has {size} values ({domain!r}); make the output layer {size} wide"
                )
