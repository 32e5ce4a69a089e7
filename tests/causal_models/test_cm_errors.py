"""Tests of causal_models.errors: hierarchy and unknown-name messages."""

import pytest

from causal_models import errors


@pytest.mark.parametrize(
    "cls",
    [
        errors.UnknownVariableError,
        errors.GraphError,
        errors.DomainError,
        errors.MechanismError,
        errors.BatchShapeError,
        errors.InterventionSpecError,
        errors.MissingInputError,
        errors.SamplingError,
    ],
)
def test_every_error_is_a_causal_model_error_and_value_error(cls: type) -> None:
    assert issubclass(cls, errors.CausalModelError)
    assert issubclass(cls, ValueError)


def test_unknown_name_message_lists_close_matches_and_valid_names() -> None:
    msg = errors.unknown_name_message("S3", ["x", "S1", "S2", "O"])
    assert "unknown variable 'S3'" in msg
    assert "did you mean 'S1' or 'S2'" in msg or "did you mean 'S2' or 'S1'" in msg
    assert "valid: x, S1, S2, O" in msg


def test_unknown_name_message_without_close_match_has_no_hint() -> None:
    msg = errors.unknown_name_message("zzzz", ["x", "y"], "input")
    assert "did you mean" not in msg and "unknown input 'zzzz'" in msg


def test_key_errors_print_their_message_unquoted() -> None:
    e = errors.UnknownVariableError("unknown variable 'q'")
    assert str(e) == "unknown variable 'q'"
    assert str(errors.MissingInputError("missing input 'z'")) == "missing input 'z'"
