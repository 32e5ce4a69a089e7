"""TX-Ray plots (plotly): overview views to pick neurons, detail views of their features.

Overview: Hellinger distance vs Hellinger length (`plot_hellinger_vs_length`), length
shift per neuron (`plot_length_shift`), normalised activation mass per neuron and stage
(`plot_activation_mass`). Detail: feature distributions of the top-k / least-k Hellinger
neurons before and after (`plot_neuron_details`). Save with ``fig.write_html(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iit.attribution.txray.distributions import NeuronDistributions
from iit.attribution.txray.measures import TXRayComparison
from iit.errors import ArgumentError

__all__ = [
    "plot_hellinger_vs_length",
    "plot_length_shift",
    "plot_activation_mass",
    "plot_neuron_details",
]


def plot_hellinger_vs_length(comp: TXRayComparison, title: str = "") -> go.Figure:
    """Scatter of Hellinger distance (y) vs Hellinger length (x), one point per shared neuron."""
    idx = comp.shared.nonzero().flatten().tolist()
    fig = go.Figure(
        go.Scatter(
            x=[int(comp.hellinger_length[i]) for i in idx],
            y=[float(comp.hellinger[i]) for i in idx],
            mode="markers",
            text=[f"neuron {i}" for i in idx],
            marker={
                "color": [float(comp.mass_b[i]) for i in idx],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": "mass (b)"},
            },
        )  # fmt: skip
    )
    fig.update_layout(
        title=title or "Hellinger distance vs Hellinger length (shared neurons)",
        xaxis_title="Hellinger length (|support a ∪ support b|)",
        yaxis_title="Hellinger distance",
    )
    return fig


def plot_length_shift(comp: TXRayComparison, title: str = "") -> go.Figure:
    """Per shared neuron: length before and after, joined by a line (sorted by shift)."""
    idx = comp.shared.nonzero().flatten()
    idx = idx[comp.length_shift[idx].argsort()].tolist()
    fig = go.Figure()
    for name, lengths in (("a", comp.length_a), ("b", comp.length_b)):
        fig.add_trace(
            go.Scatter(
                x=[str(i) for i in idx],
                y=[int(lengths[i]) for i in idx],
                mode="markers+lines",
                name=f"length {name}",
            )  # fmt: skip
        )
    fig.update_layout(
        title=title or "Neuron length shift (shortening = specialisation)",
        xaxis_title="neuron (sorted by shift)",
        yaxis_title="distinct features",
    )
    return fig


def plot_activation_mass(stages: Mapping[str, NeuronDistributions], title: str = "") -> go.Figure:
    """Normalised activation mass per neuron, one bar trace per stage/model."""
    fig = go.Figure()
    for name, dist in stages.items():
        mass = dist.activation_mass()
        fig.add_trace(go.Bar(x=list(range(len(mass))), y=mass.tolist(), name=name))
    fig.update_layout(
        title=title or "Normalised activation mass per neuron",
        xaxis_title="neuron",
        yaxis_title="share of layer mass",
        barmode="group",
    )
    return fig


def plot_neuron_details(
    a: NeuronDistributions,
    b: NeuronDistributions,
    comp: TXRayComparison,
    k: int = 10,
    which: Literal["top", "least"] = "top",
    feature_names: Sequence[str] | None = None,
    top_features: int = 10,
) -> go.Figure:
    """Feature distributions (before ``a`` vs after ``b``) of the ``k`` top/least Hellinger
    neurons; each panel shows the neuron's ``top_features`` most probable features.

    Raises:
        ArgumentError: if no neuron is shared, or ``which`` is invalid.
    """
    neurons = comp.ranked(k, which)
    if not neurons:
        raise ArgumentError("no neuron is active in both recordings; nothing to plot")
    pa, pb = a.distributions(), b.distributions()
    names = (
        list(feature_names) if feature_names is not None else [str(i) for i in range(pa.shape[1])]
    )
    fig = make_subplots(
        rows=len(neurons), cols=1,
        subplot_titles=[f"neuron {n}: H={float(comp.hellinger[n]):.3f}" for n in neurons],
    )  # fmt: skip
    for row, n in enumerate(neurons, start=1):
        feats = (pa[n] + pb[n]).argsort(descending=True)[:top_features].tolist()
        for label, p, color in (("a", pa, "#1f77b4"), ("b", pb, "#ff7f0e")):
            fig.add_trace(
                go.Bar(x=[names[f] for f in feats], y=[float(p[n, f]) for f in feats], name=label,
                       marker_color=color, showlegend=row == 1),  # fmt: skip
                row=row, col=1,
            )  # fmt: skip
    fig.update_layout(
        title=f"{which}-{len(neurons)} Hellinger neurons: feature distributions a vs b",
        height=220 * len(neurons),
        barmode="group",
    )
    return fig
