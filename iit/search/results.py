"""The result of a search: a tidy table (one row per cell) and what is read off it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from iit.errors import ArgumentError, NamingError
from iit.interventions import Intervention

__all__ = ["SearchResult", "COLUMNS"]

COLUMNS = (
    "variable", "place", "layer", "component", "position", "head", "featurizer", "size", "d",
    "iia_val", "iia_test", "iia_test_low", "iia_test_high", "iia_test_impactful",
    "control_random", "control_random_low", "control_random_high", "control_random_impactful",
    "control_untrained", "control_untrained_low", "control_untrained_high", "control_untrained_impactful",
    "n_test", "n_test_impactful", "best_epoch", "seed", "seconds",
)


@dataclass
class SearchResult:
    """A finished search.

    Attributes:
        table: one row per cell (columns `COLUMNS`; see `iit.search.cells.run_cell`).
        interventions: the scored intervention of each cell by key
            (``<variable>__<place>__<featurizer>__k<size>``), when kept.
        skipped: cells not run, with the reason (e.g. a size larger than the place).

    Raises:
        TypeError: a missing or unknown field.

    Examples:
        >>> cells = [(0, 1, 0.6, 0.5), (0, 2, 0.7, 0.75), (1, 1, 0.9, 0.875), (1, 2, 0.95, 0.875)]
        >>> rows = [{"variable": "S", "place": f"L{layer}", "layer": layer, "featurizer": "das",
        ...          "size": size, "iia_val": val, "iia_test": test} for layer, size, val, test in cells]
        >>> result = SearchResult(SearchResult.table_from_rows(rows))
        >>> result.pivot("layer", "size")
        size       1      2
        layer
        0      0.500  0.750
        1      0.875  0.875
        >>> result.best()[["place", "size", "iia_test"]].to_dict()
        {'place': 'L1', 'size': 2, 'iia_test': 0.875}
    """

    table: pd.DataFrame
    interventions: Mapping[str, Intervention] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def _rows(self, featurizer: str | None) -> pd.DataFrame:
        rows = self.table if featurizer is None else self.table[self.table["featurizer"] == featurizer]
        if rows.empty:
            have = sorted(self.table["featurizer"].unique())
            raise NamingError(f"no cells with featurizer {featurizer!r}; the table has {have}")
        return rows

    def best(self, featurizer: str | None = None) -> pd.Series:
        """The cell with the highest validation IIA (ties: smaller size, then table order);
        report its ``iia_test``.

        Raises:
            NamingError: no cell of ``featurizer``.
        """
        rows = self._rows(featurizer)
        return rows.sort_values(["iia_val", "size"], ascending=[False, True], kind="stable").iloc[0]

    def smallest_size(self, margin: float = 0.02, featurizer: str | None = None) -> pd.Series:
        """The smallest-size cell whose validation IIA is within ``margin`` of the best
        (ties: higher validation IIA).

        Raises:
            NamingError: no cell of ``featurizer``.
            ArgumentError: a negative margin.
        """
        if margin < 0:
            raise ArgumentError(f"margin must be >= 0, got {margin}")
        rows = self._rows(featurizer)
        good = rows[rows["iia_val"] >= rows["iia_val"].max() - margin]
        return good.sort_values(["size", "iia_val"], ascending=[True, False], kind="stable").iloc[0]

    def pivot(self, rows: str, columns: str, value: str = "iia_test", featurizer: str | None = None) -> pd.DataFrame:
        """``value`` on a ``rows x columns`` grid; where several cells fall on one grid point
        (other axes), the one with the best validation IIA gives the value.

        Args:
            rows: the table column on the grid's rows (e.g. ``"layer"``).
            columns: the table column on the grid's columns (e.g. ``"size"``).
            value: the column shown.
            featurizer: restrict to one featurizer (default: all).

        Returns:
            A ``pandas.DataFrame`` indexed by ``rows`` values, with one column per ``columns``
            value (NaN where no cell falls).

        Raises:
            ArgumentError: an axis column that is empty for these cells.
            NamingError: no cells with ``featurizer``.
        """
        table = self._rows(featurizer).copy()
        for axis in (rows, columns):
            if table[axis].isna().all():
                raise ArgumentError(f"column {axis!r} is empty for these cells; choose axes among {list(COLUMNS[:9])}")
        table = table.sort_values("iia_val", ascending=False, kind="stable").drop_duplicates([rows, columns])
        return table.pivot(index=rows, columns=columns, values=value).sort_index().sort_index(axis=1)

    def save(self, path: str | Path) -> Path:
        """Write the table as CSV (``.csv``) or Parquet (``.parquet``).

        Raises:
            ArgumentError: another suffix.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            self.table.to_csv(path, index=False)
        elif path.suffix == ".parquet":
            self.table.to_parquet(path, index=False)
        else:
            raise ArgumentError(f"save as .csv or .parquet, got {path.name!r}")
        return path

    @staticmethod
    def table_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
        """The tidy table of cell rows, in `COLUMNS` order."""
        return pd.DataFrame(rows, columns=list(COLUMNS))
