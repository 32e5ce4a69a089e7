"""The semiring-backpropagation paper's experiments (Du et al., ACL 2023) as small tasks.

Run each with ``python -m tasks.semiring.<name>``: ``first_token_repeated`` (top gradient paths
on FirstTokenRepeatedOnce with a small BERT), ``ffoom`` (gradient-graph entropy vs MLP size),
``sva`` (subject-verb agreement on a synthetic grammar). Each trains in seconds on 2 CPU cores.
"""
