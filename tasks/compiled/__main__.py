"""``python -m tasks.compiled``: compile every program, check the PyTorch conversion against
tracr on all inputs, and print each variable's true alignment with its IIA (and the IIA of the
same dims one residual point earlier, before they are written)."""

from __future__ import annotations

import time

from tasks.compiled.alignment import interchange_iia, residual_points, true_alignment
from tasks.compiled.convert import compile_program, conversion_mismatches
from tasks.compiled.programs import PROGRAMS


def main() -> None:
    print("| program | variable | true point | dims | IIA (defined pairs) | impactful IIA (n) | IIA one point earlier |")
    print("|---|---|---|---|---|---|---|")
    for name, spec in PROGRAMS.items():
        start = time.perf_counter()
        compiled = compile_program(spec)
        mismatches = conversion_mismatches(compiled)
        for variable in compiled.variables():
            true = true_alignment(compiled, variable)
            score = interchange_iia(compiled, true)
            points = residual_points(compiled)
            earlier = interchange_iia(compiled, true, point=points[points.index(true.point) - 1])
            print(
                f"| {name} | {variable} | {true.point} | {true.dims[0]}..{true.dims[-1]} | {score.iia:.3f} "
                f"| {score.iia_impactful:.3f} ({score.n_impactful}) | {earlier.iia:.3f} |"
            )
        print(f"<!-- {name}: conversion mismatches {mismatches}, {time.perf_counter() - start:.1f} s -->")


if __name__ == "__main__":
    main()
