"""The sparse-autoencoder featurizer: features are an SAE's latents, given as its
encoder / decoder weights; the reconstruction error is kept, so the SAE's imperfection never
changes an unintervened hidden state."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from iit.errors import InterventionError
from iit.featurizers.base import (
    Featurizer,
    dtype_from_name,
    dtype_name,
    in_compute_dtype,
    register_featurizer,
)

__all__ = ["SAEFeaturizer"]


@register_featurizer
class SAEFeaturizer(Featurizer):
    """``encode(h) = act((h - b_dec) @ W_enc + b_enc)``, ``decode(f) = f @ W_dec + b_dec``
    (the sae-lens convention; ``subtract_decoder_bias=False`` drops ``- b_dec`` in the encoder).

    Args:
        w_enc: encoder weight ``[d, m]`` (copied into a frozen buffer, as are the others).
        b_enc: encoder bias ``[m]``.
        w_dec: decoder weight ``[m, d]``.
        b_dec: decoder bias ``[d]``.
        activation: ``"relu"``, or ``"jumprelu"`` (``z * (z > threshold)``).
        threshold: ``[m]``, JumpReLU thresholds (required for ``"jumprelu"``).
        subtract_decoder_bias: subtract ``b_dec`` from ``h`` before encoding.

    Raises:
        InterventionError: shapes that do not fit together, or a missing JumpReLU threshold.
    """

    kind = "sae"

    def __init__(
        self,
        w_enc: Tensor,
        b_enc: Tensor,
        w_dec: Tensor,
        b_dec: Tensor,
        *,
        activation: Literal["relu", "jumprelu"] = "relu",
        threshold: Tensor | None = None,
        subtract_decoder_bias: bool = True,
    ) -> None:
        super().__init__()
        d, m = w_enc.shape
        shapes = {"b_enc": (tuple(b_enc.shape), (m,)), "w_dec": (tuple(w_dec.shape), (m, d)), "b_dec": (tuple(b_dec.shape), (d,))}
        bad = {k: v for k, v in shapes.items() if v[0] != v[1]}
        if bad:
            raise InterventionError(
                "SAEFeaturizer: with w_enc [d, m] = " + f"{[d, m]} expected "
                + ", ".join(f"{k} {list(want)} but got {list(got)}" for k, (got, want) in bad.items())
            )
        if activation not in ("relu", "jumprelu"):
            raise InterventionError(f"activation must be 'relu' or 'jumprelu', got {activation!r}")
        if activation == "jumprelu" and (threshold is None or tuple(threshold.shape) != (m,)):
            raise InterventionError(f"a jumprelu SAE needs threshold [m] = [{m}]")
        self.d, self.n_features = int(d), int(m)
        self.activation, self.subtract_decoder_bias = activation, subtract_decoder_bias
        for name, value in (("w_enc", w_enc), ("b_enc", b_enc), ("w_dec", w_dec), ("b_dec", b_dec)):
            self.register_buffer(name, value.detach().clone())
        zeros = torch.zeros(m, dtype=w_enc.dtype, device=w_enc.device)
        self.register_buffer("threshold", (threshold if threshold is not None else zeros).detach().clone())

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SAEFeaturizer:
        """An SAE of the shapes in ``config`` (zero weights; load the values with ``load_state_dict``).

        Args:
            config: what `config` returned: ``d``, ``m``, ``activation``,
                ``subtract_decoder_bias`` and optionally ``dtype``.

        Raises:
            KeyError: a required key is missing from ``config``.
            InterventionError: an unknown dtype or activation.
        """
        d, m = config["d"], config["m"]
        dtype = dtype_from_name(config.get("dtype", "float32"))
        return cls(
            torch.zeros(d, m, dtype=dtype), torch.zeros(m, dtype=dtype), torch.zeros(m, d, dtype=dtype),
            torch.zeros(d, dtype=dtype), activation=config["activation"], threshold=torch.zeros(m, dtype=dtype),
            subtract_decoder_bias=config["subtract_decoder_bias"],
        )

    def encode(self, h: Tensor) -> Tensor:
        """Latents ``[..., d] -> [..., m]`` in ``promote_types(weight dtype, h dtype)`` on ``h``'s device."""
        x, w_enc, b_enc, b_dec, threshold = in_compute_dtype(h, self.w_enc, self.b_enc, self.b_dec, self.threshold)
        if self.subtract_decoder_bias:
            x = x - b_dec
        z = x @ w_enc + b_enc
        if self.activation == "jumprelu":
            return z * (z > threshold)
        return torch.relu(z)

    def decode(self, f: Tensor) -> Tensor:
        """``f @ W_dec + b_dec``: ``[..., m] -> [..., d]``, in ``promote_types(weight dtype, f dtype)``
        on ``f``'s device."""
        x, w_dec, b_dec = in_compute_dtype(f, self.w_dec, self.b_dec)
        return x @ w_dec + b_dec

    def config(self) -> dict[str, Any]:
        """``{"d", "m", "activation", "subtract_decoder_bias", "dtype"}`` (shapes and options)."""
        return {"d": self.d, "m": self.n_features, "activation": self.activation,
                "subtract_decoder_bias": self.subtract_decoder_bias, "dtype": dtype_name(self.w_enc.dtype)}
