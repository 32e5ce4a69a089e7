"""Ground truth from compiled programs: RASP programs compiled to transformer weights by tracr
(optional extra ``tracr``), converted to a PyTorch module the library wraps, with every
residual-stream dimension labelled by the program variable it holds.

    from tasks.compiled import compile_program, PROGRAMS
    compiled = compile_program(PROGRAMS["reverse"])    # tracr compile + conversion
    compiled.module(tokens)                              # [batch, seq, n_out] in PyTorch
    compiled.variable_dims("opp_idx")                    # the true residual dims of a variable
"""

from tasks.compiled.convert import CompiledModel, CompiledTransformer, compile_program
from tasks.compiled.programs import PROGRAMS, ProgramSpec

__all__ = ["PROGRAMS", "CompiledModel", "CompiledTransformer", "ProgramSpec", "compile_program"]
