"""`IITModule`: a LightningModule that trains a network so that a causal model abstracts it
(interchange intervention training), and measures how far that holds (IIA).

One training step, with in-batch sources (the default): row ``i`` takes row ``perm[i]`` of the
same batch as its source, its causal counterfactual label comes from the causal model with the same
permutation, and `iit.Interventionable.intervene_in_batch` gives the behaviour output and the
counterfactual prediction (and the strict-IIT one) from **one forward** over the batch repeated
along its batch axis: the first copy is the plain base run and gives the source values at each
aligned site, the next copies are intervened (see `iit.in_batch`; two forwards when rows of the
model interact, e.g. batch norm in training mode, or with ``one_pass=False``). With
``in_batch_sources=False`` the sources drawn by the data module are run separately.

Losses (weights in `IITConfig`): behaviour ``loss(N(b), H(b))``, IIT
``loss(N_{Π(V)<-N(s)}(b), H_{V<-H(s)}(b))`` and strict IIT ``loss(N_{U<-N(s)}(b), H(b))`` for
unaligned coordinates ``U`` (one sampled per row). Whether the IIT loss reaches the network through
the source run as well as the base run is ``detach_sources`` (default ``False``: it does).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.utils.parametrize
from torch import Tensor, nn
from torchmetrics import MeanMetric

from causal_models.data import CounterfactualBatch
from causal_models.engine import evaluate_checked
from iit.alignment import Alignment
from iit.errors import ArgumentError
from iit.hooks import call_model
from iit.interventions import BoundIntervention, Interchange
from iit.trainable import LearnedInterventions, TrainingProgress
from iit.training.metrics import InterchangeAccuracy
from iit.training.objectives import correct, prediction_loss
from iit.training.seed import resolve_seed
from iit.training.task import IITTask

__all__ = ["IITConfig", "IITModule"]

# set in every step: never parameters, buffers or submodules
_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_loss_sums", "_loss_count", "_labels_checked"})


@dataclass(frozen=True)
class IITConfig:
    """Hyper-parameters of `IITModule`.

    Attributes:
        behaviour_weight: weight of the task loss on base inputs (0: skipped).
        iit_weight: weight of the IIT loss (0: skipped, i.e. behaviour-only training).
        strict_weight: weight of the strict-IIT loss over the task's unaligned coordinates.
        in_batch_sources: sources are other rows of the same batch (a permutation of it), so no
            separate source run is needed; False runs the data module's sources.
        one_pass: with in-batch sources, run the base batch and its intervened copies as one
            forward over the repeated batch (`iit.Interventionable.intervene_in_batch`; the same
            losses and gradients when rows do not interact, and used only then); False: a base
            run, then one intervened run per loss.
        detach_sources: stop IIT gradients through the source run (default False: they flow
            through both runs).
        freeze_network: DAS mode: the network's parameters are frozen and only the
            alignment's learned interventions train.
        alignment: name of the task alignment to train.
        boundary_lr: learning rate of parameters a learned intervention puts in its
            ``"boundary"`` group (Boundless DAS).
        regularizer_weight: weight of the learned interventions' regularizer terms
            (Boundless DAS: the boundary size), see `iit.trainable`.
        temperature: ``(start, end)`` of annealed masks, linear over the run's optimizer steps
            (Boundless DAS).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        regression_atol: tolerance of a correct regression prediction.
        seed: seeds the network's initial weights (``task.build_network()`` runs under
            ``torch.manual_seed(seed)``) and the per-step permutations (step ``k`` uses
            ``seed * 1_000_003 + k``, so a resumed run repeats an uninterrupted one). ``None``
            (default): the seed of ``pytorch_lightning.seed_everything`` (``seed_everything:`` in a
            CLI config), else 0 — so one ``seed_everything(s)`` fixes weights, data and
            permutations (see `iit.training.resolve_seed`).

    Raises:
        ArgumentError: a negative weight, learning rate or weight decay, or every loss weight 0.
    """

    behaviour_weight: float = 1.0
    iit_weight: float = 1.0
    strict_weight: float = 0.0
    in_batch_sources: bool = True
    one_pass: bool = True
    detach_sources: bool = False
    freeze_network: bool = False
    alignment: str = "default"
    boundary_lr: float = 1e-2
    regularizer_weight: float = 1.0
    temperature: tuple[float, float] = (50.0, 0.1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    regression_atol: float = 0.05
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("behaviour_weight", "iit_weight", "strict_weight", "lr", "weight_decay", "boundary_lr",
                     "regularizer_weight"):
            if getattr(self, name) < 0:
                raise ArgumentError(f"IITConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.behaviour_weight == self.iit_weight == self.strict_weight == 0:
            raise ArgumentError("IITConfig: at least one of the loss weights must be > 0")


class IITModule(pl.LightningModule):
    """Train a network with behaviour, IIT and strict-IIT losses; report IIA with torchmetrics.

    Args:
        task: the `iit.training.IITTask` (causal model, network, alignments, encoding).
        config: hyper-parameters.
        network: use this network instead of ``task.build_network()`` (e.g. a behaviour-trained
            network for DAS).

    Logged every validation epoch: ``val/task_acc``, ``val/iia`` (the data's own per-row
    variable choices), ``val/iia_impactful`` and ``val/impactful_fraction``, per variable
    ``val/iia/<var>`` (and ``.../impactful``), and ``val/strict_acc`` when the task has unaligned
    coordinates.

    Class labels are checked against the causal output's domain in the first training step of
    the module and in every evaluation; later training steps convert them without the check (a
    task that overrides `IITTask.labels` is always called as it is).

    Raises:
        AlignmentError, CoordinateError: at construction, when the alignment does not fit the
            causal model or the network, or the output size does not match the causal output.
    """

    def __init__(self, task: IITTask, config: IITConfig | None = None, network: nn.Module | None = None) -> None:
        super().__init__()
        self.task = task
        self.config = config or IITConfig()
        self.seed = resolve_seed(self.config.seed)
        self.causal_model = task.causal_model()
        if network is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                network = task.build_network()
        self.network = self.task.wrap_network(network)
        self.alignment = task.alignment(self.causal_model, self.config.alignment)
        self.learned = self.alignment.learned
        self._learned_training = LearnedInterventions(self.learned.values())
        self._has_regularizer = self.config.regularizer_weight > 0 and any(
            callable(getattr(iv, "training_regularizer", None)) for iv in self.learned.values()
        )
        self.output_variable = task.output_variable(self.causal_model)
        self._output_domain = self.causal_model.domain(self.output_variable)
        self._default_labels = type(task).labels is IITTask.labels
        self._labels_checked = False  # the first training step checks its labels against the domain
        self._step_generator = torch.Generator()  # re-seeded every step
        self.variables = tuple(task.candidate_variables())
        self.unaligned = list(task.unaligned_coordinates())
        task.check(self.network, self.causal_model, self.alignment)
        self._collect_in_training = self.config.iit_weight > 0 or (self.config.strict_weight > 0 and bool(self.unaligned))
        if self.config.freeze_network:
            self.network.model.requires_grad_(False)
        self.task_acc = MeanMetric()
        self.strict_acc = MeanMetric()
        self.iia = InterchangeAccuracy()
        self.iia_by_variable = nn.ModuleDict({v: InterchangeAccuracy() for v in self.variables})
        self._loss_sums = torch.zeros(0)
        self._loss_count = 0
        # fixed for the module's life: worked out once, not in every step
        self._in_batch_plans: dict[tuple[str, ...], list[tuple[int, Any]]] = {}
        self._learned_set = {iv for v in self.alignment.variables for iv in self.alignment.interventions(v)
                             if any(True for _ in iv.parameters())}

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` around each of the dozens of hook calls of a step;
        # nn.Module's checks for parameters, buffers and submodules cost more than a small step's op
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ------------------------------------------------------------------ helpers
    def _decode(self, output: Any) -> Tensor:
        return self.task.decode_output(output)

    def _labels(self, values: Tensor, check: bool = True) -> Tensor:
        """Class indices (or regression targets) of causal output values; ``check=False`` skips
        the domain check when the task keeps the default `IITTask.labels`."""
        if check or not self._default_labels:
            return self.task.labels(self.causal_model, values).to(self.device)
        if self.task.kind == "regression":
            return values.float().to(self.device)
        return self._output_domain.index_of(values, check=False).to(self.device)

    def _loss(self, output: Any, labels: Tensor) -> Tensor:
        return prediction_loss(self._decode(output), labels, self.task.kind)

    def _correct(self, output: Any, labels: Tensor) -> Tensor:
        return correct(self._decode(output), labels, self.task.kind, self.config.regression_atol)

    def _in_batch_interventions(self, variables: tuple[str, ...], intervened: Tensor) -> list[BoundIntervention]:
        """The aligned interventions of an in-batch step (every row's source is slot 0): one per
        (candidate variable, aligned intervention), restricted to the rows that intervene on the
        variable; ``Alignment.bound_interventions`` with every source index 0. Without learned
        interventions it needs no device sync: a variable no row picks gets an all-False row
        mask, which changes no value and no gradient. With them, such variables are left out (one
        sync), so their parameters get no gradient, as with ``bound_interventions``."""
        plan = self._in_batch_plans.get(variables)
        if plan is None:
            self.alignment.require_aligned(variables)
            plan = [(j, iv) for j, v in enumerate(variables) for iv in self.alignment.interventions(v)]
            self._in_batch_plans[variables] = plan
        if any(iv in self._learned_set for _, iv in plan):
            present = intervened.any(dim=0).tolist()
            plan = [(j, iv) for j, iv in plan if present[j]]
        return [BoundIntervention(iv, rows=intervened[:, j], source=0) for j, iv in plan]

    def _strict_interventions(self, batch_size: int, generator: torch.Generator) -> list:
        """One unaligned coordinate per row, resample-ablated from source slot 0."""
        choice = torch.randint(0, len(self.unaligned), (batch_size,), generator=generator).to(self.device)
        return [Interchange(c).where(choice == k) for k, c in enumerate(self.unaligned) if (choice == k).any()]

    # ------------------------------------------------------------------ losses
    def compute_losses(self, batch: CounterfactualBatch, generator: torch.Generator) -> dict[str, Tensor]:
        """The loss terms of one step (``behaviour``, ``iit``, ``strict``, ``regularizer`` when a
        learned intervention has one, and the weighted ``total``; a behaviour-only configuration
        runs one plain forward and returns ``behaviour`` and ``total``).

        In-batch sources replace the batch's sources by a permutation of its bases (drawn
        from ``generator``); the counterfactual labels are recomputed with the same
        permutation.

        Args:
            batch: counterfactual pairs (``batch.base`` values ``{input: [batch, ...]}``).
            generator: RNG of the in-batch permutation and the strict-IIT ablations.

        Returns:
            ``{term: 0-d loss tensor []}``.

        Raises:
            AlignmentError: the batch intervenes on a variable the alignment lacks.
        """
        cfg = self.config
        base_inputs = self.task.encode_inputs(batch.base)
        need_output = cfg.behaviour_weight > 0
        if not self._collect_in_training:  # behaviour only: one plain forward
            base_labels = self._labels(batch.base_output, not self._labels_checked)
            behaviour = self._loss(call_model(self.network, base_inputs), base_labels)
            return {"behaviour": behaviour, "total": cfg.behaviour_weight * behaviour}
        iit_labels: Tensor | None = None
        groups: dict[str, list] = {}
        if cfg.in_batch_sources:
            perm = torch.randperm(len(batch), generator=generator)
            if cfg.iit_weight > 0:  # one source slot: a plain interchange with row masks, no syncs
                variables = tuple(batch.variables)
                perm_on = perm.to(batch.intervened.device)
                # the data module checked these inputs and variables when it made the pairs
                n, model = len(batch), self.causal_model
                source = evaluate_checked(model, {k: v[perm_on] for k, v in batch.base.items()}, {}, {}, n, False)
                values = evaluate_checked(
                    model, batch.base, {v: source[v] for v in variables},
                    {v: batch.intervened[:, j] for j, v in enumerate(variables)}, n, False,
                )
                iit_labels = values[self.output_variable]
                groups["iit"] = self._in_batch_interventions(variables, batch.intervened)
            if cfg.strict_weight > 0 and self.unaligned:
                groups["strict"] = self._strict_interventions(len(batch), generator)
            groups = {k: g for k, g in groups.items() if g}
            if groups:
                base_output, outputs = self.network.intervene_in_batch(
                    base_inputs, list(groups.values()), perm, detach_sources=cfg.detach_sources,
                    return_base_output=need_output, one_pass=cfg.one_pass,
                )
            else:
                base_output, outputs = (call_model(self.network, base_inputs) if need_output else None), []
            intervened = dict(zip(groups, outputs))
        else:
            # the data module's inputs were checked against their domains when generated
            base_output = call_model(self.network, base_inputs) if need_output else None
            net_sources = [self.task.encode_inputs(s) for s in batch.sources]
            intervened = {}
            if cfg.iit_weight > 0:
                values = self.causal_model.interchange_per_row(
                    batch.base, batch.sources, batch.variables, batch.intervened, batch.source_index, validate=False
                )
                iit_labels = values[self.output_variable]
                bound = self.alignment.bound_interventions(batch.variables, batch.intervened, batch.source_index)
                if bound:
                    intervened["iit"] = self.network.intervene(
                        base_inputs, bound, net_sources, detach_sources=cfg.detach_sources
                    )
            if cfg.strict_weight > 0 and self.unaligned:
                ivs = self._strict_interventions(len(batch), generator)
                intervened["strict"] = self.network.intervene(
                    base_inputs, ivs, net_sources[:1], detach_sources=cfg.detach_sources
                )
        check = not self._labels_checked
        base_labels = self._labels(batch.base_output, check)
        zero = torch.zeros((), device=self.device)
        losses = {"behaviour": zero, "iit": zero, "strict": zero}
        if need_output:
            losses["behaviour"] = self._loss(base_output, base_labels)
        if "iit" in intervened:
            losses["iit"] = self._loss(intervened["iit"], self._labels(iit_labels, check))
        if "strict" in intervened:
            losses["strict"] = self._loss(intervened["strict"], base_labels)
        losses["total"] = _weighted_sum(
            [(cfg.behaviour_weight, losses["behaviour"]), (cfg.iit_weight, losses["iit"]),
             (cfg.strict_weight, losses["strict"])], zero,
        )
        if self._has_regularizer:
            regularizer = self._learned_training.regularizer()
            losses["regularizer"] = regularizer
            losses["total"] = losses["total"] + cfg.regularizer_weight * regularizer
        return losses

    def training_step(self, batch: CounterfactualBatch, batch_idx: int) -> Tensor:
        """The weighted total loss (0-d ``[]``) of one step; its terms are summed for the epoch
        means.

        Args:
            batch: counterfactual pairs.
            batch_idx: the batch's index in the epoch (Lightning's).
        """
        generator = self._step_generator.manual_seed(self.seed * 1_000_003 + self.global_step)
        if self._learned_training.interventions:
            # evaluate orthogonal parametrisations (DAS rotations) once per step, even when shared
            with torch.nn.utils.parametrize.cached():
                losses = self.compute_losses(batch, generator)
        else:
            losses = self.compute_losses(batch, generator)
        # epoch means accumulate in one tensor; they are logged once per epoch (a per-step
        # ``self.log`` costs more than a small network's whole step)
        self._labels_checked = True
        with torch.no_grad():
            terms = torch.stack([losses[name].detach() for name in self._logged_losses])
            self._loss_sums = self._loss_sums.to(terms.device) + terms * len(batch)
            self._loss_count += len(batch)
        return losses["total"]

    @property
    def _logged_losses(self) -> tuple[str, ...]:
        """Loss terms worth logging: those with a positive weight, and the total (fixed by the
        configuration: worked out once)."""
        logged = self.__dict__.get("_logged_terms")
        if logged is None:
            cfg = self.config
            weights = {"behaviour": cfg.behaviour_weight, "iit": cfg.iit_weight,
                       "strict": cfg.strict_weight if self.unaligned else 0.0}
            extra = ("regularizer",) if self._has_regularizer else ()
            logged = self.__dict__["_logged_terms"] = tuple(n for n, w in weights.items() if w > 0) + extra + ("total",)
        return logged

    def on_train_batch_start(self, batch: CounterfactualBatch, batch_idx: int) -> None:
        """Learned interventions' schedules (`iit.trainable`) for this optimizer step."""
        if self._learned_training.interventions:
            total = int(self.trainer.estimated_stepping_batches)
            self._learned_training.on_training_step(TrainingProgress(self.global_step, total, self.config.temperature))

    def on_train_batch_end(self, outputs: Any, batch: CounterfactualBatch, batch_idx: int) -> None:
        """Learned interventions' projections after the optimizer step."""
        if self._learned_training.interventions:
            self._learned_training.after_optimizer_step()

    def on_train_epoch_start(self) -> None:
        """Reset the sums behind the epoch's mean losses."""
        self._loss_sums = torch.zeros(len(self._logged_losses), device=self.device)
        self._loss_count = 0

    def on_train_epoch_end(self) -> None:
        """Log the epoch means ``train/<term>_loss`` of the weighted-in loss terms (averaged
        over processes under DDP)."""
        if self._loss_count == 0:
            return
        means = self._loss_sums / self._loss_count
        for name, value in zip(self._logged_losses, means):
            self.log(f"train/{name}_loss", value, prog_bar=name == "total", sync_dist=True)

    # ------------------------------------------------------------------ evaluation
    def evaluate_batch(self, batch: CounterfactualBatch, alignment: Alignment | None = None) -> dict[str, Any]:
        """Evaluate one batch (no gradients): ``task_correct`` ``[B]``, ``correct`` /
        ``impactful`` ``[B]`` for the batch's own variable choices, ``by_variable`` ``{var:
        (correct, impactful)}`` intervening on each candidate variable in every row, and
        ``strict`` ``[n_unaligned, B]`` correctness under each unaligned resample ablation.
        ``correct`` / ``impactful`` are ``None`` when the batch intervenes on variables the
        alignment lacks.

        Args:
            batch: counterfactual pairs with sources (the batch's sources are used).
            alignment: evaluate another alignment hypothesis (default: the trained one).
        """
        alignment = alignment or self.alignment
        encode = self.task.encode_inputs
        with torch.no_grad():
            base_inputs = encode(batch.base)
            # one forward per source slot collects every coordinate the evaluations read
            coords = alignment.source_coordinates() + [c for c in self.unaligned if c not in alignment.source_coordinates()]
            sources = [self.network.collect(encode(s), coords) if coords else encode(s) for s in batch.sources]
            base_labels = self._labels(batch.base_output)
            result: dict[str, Any] = {"task_correct": self._correct(call_model(self.network, base_inputs), base_labels)}
            result["correct"] = result["impactful"] = None
            if set(batch.variables) <= set(alignment.variables):
                run = alignment.interchange(self.network, batch, encode, sources)
                result["correct"] = self._correct(run.neural_output, self._labels(run.counterfactual_label))
                result["impactful"] = run.impactful
            result["by_variable"] = {}
            for variable in alignment.variables:
                one = _single_variable(batch, variable)
                run = alignment.interchange(self.network, one, encode, sources)
                result["by_variable"][variable] = (
                    self._correct(run.neural_output, self._labels(run.counterfactual_label)),
                    run.impactful,
                )
            strict = [
                self._correct(self.network.intervene(base_inputs, [Interchange(c)], sources[:1]), base_labels)
                for c in self.unaligned
            ]
            result["strict"] = torch.stack(strict) if strict else None
        return result

    def validation_step(self, batch: CounterfactualBatch, batch_idx: int) -> None:
        """Update task accuracy, IIA (overall and per variable) and strict accuracy with one
        held-out batch (see `evaluate_batch`).

        Args:
            batch: counterfactual pairs.
            batch_idx: the batch's index (Lightning's).
        """
        result = self.evaluate_batch(batch)
        self.task_acc.update(result["task_correct"].float())
        if result["correct"] is not None:
            self.iia.update(result["correct"], result["impactful"])
        for variable, (ok, impactful) in result["by_variable"].items():
            if variable in self.iia_by_variable:
                self.iia_by_variable[variable].update(ok, impactful)
        if result["strict"] is not None:
            self.strict_acc.update(result["strict"].float().mean(0))

    def on_validation_epoch_end(self) -> None:
        """Log ``val/task_acc``, ``val/iia`` (with ``_impactful`` and the impactful fraction),
        ``val/iia/<variable>`` and ``val/strict_acc``, then reset the metrics."""
        logged = {"val/task_acc": self.task_acc.compute()}
        overall = self.iia.compute()
        logged.update({"val/iia": overall["iia"], "val/iia_impactful": overall["iia_impactful"],
                       "val/impactful_fraction": overall["impactful_fraction"]})
        for variable, metric in self.iia_by_variable.items():
            if metric.total > 0 or torch.distributed.is_available() and torch.distributed.is_initialized():
                values = metric.compute()
                logged[f"val/iia/{variable}"] = values["iia"]
                logged[f"val/iia/{variable}/impactful"] = values["iia_impactful"]
        if self.unaligned:
            logged["val/strict_acc"] = self.strict_acc.compute()
        for name, value in logged.items():
            self.log(name, value, prog_bar=name in ("val/iia", "val/task_acc"))
        for metric in [self.task_acc, self.strict_acc, self.iia, *self.iia_by_variable.values()]:
            metric.reset()

    # ------------------------------------------------------------------ optimisation, checkpoints
    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy`` (FSDP2), shard the network (and the
        learned interventions) over the data-parallel mesh with ``fully_shard``; a no-op
        otherwise. Hooks stay on the network's own submodules, so interventions work unchanged."""
        mesh = self.device_mesh
        if mesh is None or getattr(self, "_iit_sharded", False):
            return
        from torch.distributed.fsdp import fully_shard

        dp = mesh["data_parallel"] if mesh.mesh_dim_names and "data_parallel" in mesh.mesh_dim_names else mesh
        fully_shard(self.network.model, mesh=dp)
        if any(p.requires_grad for p in self.learned.parameters()):
            fully_shard(self.learned, mesh=dp)
        self._iit_sharded = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The optimiser over the network (unless frozen) and the learned interventions; an
        intervention's ``"boundary"`` group trains at ``boundary_lr``.

        Raises:
            ArgumentError: nothing to train (every parameter frozen and no learned
                intervention).
        """
        cfg = self.config
        network = [p for p in self.network.parameters() if p.requires_grad]
        params = self._learned_training.param_groups(cfg.lr, {"boundary": cfg.boundary_lr}, extra=network)
        if not params:
            raise ArgumentError("nothing to train: every parameter is frozen (DAS mode needs learned interventions)")
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the alignment and causal model descriptions (plain strings, so the checkpoint
        loads with ``torch.load(weights_only=True)``)."""
        checkpoint["iit"] = {
            "task": self.task.name,
            "alignment_name": self.config.alignment,
            "alignment": self.alignment.describe(),
            "causal_model": self.causal_model.describe(),
            "config": {k: v for k, v in asdict(self.config).items()},
        }


# Lightning reads ``training_step``'s parameters (``inspect.getfullargspec``) before every step;
# a signature stored on the function (standard ``__signature__``) turns that into a lookup
IITModule.training_step.__signature__ = inspect.signature(IITModule.training_step)  # type: ignore[attr-defined]


def _weighted_sum(terms: Sequence[tuple[float, Tensor]], zero: Tensor) -> Tensor:
    """``sum(w * t)`` over the terms with ``w > 0`` (``zero`` if none), without the multiplications
    by 1 (the same value, a few operations less per step)."""
    total: Tensor | None = None
    for weight, term in terms:
        if weight > 0:
            term = term if weight == 1 else weight * term
            total = term if total is None else total + term
    return zero if total is None else total


def _single_variable(batch: CounterfactualBatch, variable: str) -> CounterfactualBatch:
    """The same pairs, every row intervening on ``variable`` alone from source slot 0."""
    variables = (variable,)
    n = len(batch)
    return replace(
        batch,
        variables=variables,
        intervened=torch.ones(n, 1, dtype=torch.bool, device=batch.intervened.device),
        source_index=torch.zeros(n, 1, dtype=torch.long, device=batch.intervened.device),
    )


def describe_results(metrics: Mapping[str, Any], variables: Sequence[str]) -> dict[str, float]:
    """Plain floats of the logged validation metrics for a table (missing ones as nan)."""
    keys = ["val/task_acc", "val/iia", "val/iia_impactful"] + [f"val/iia/{v}" for v in variables]
    return {k: float(metrics[k]) if k in metrics else float("nan") for k in keys}
