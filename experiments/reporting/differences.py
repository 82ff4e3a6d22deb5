"""What differs between compared sweeps as wholes: their environments and the machine's own roofs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.reporting.sweeps import Sweep
from infer_core.measure.environment import Environment

#: The environment columns of every row, and the engine's and server's versions where an experiment records them.
ENVIRONMENT = (*Environment.__dataclass_fields__, "engine_version", "server_version")
PER_ROW = ("started_utc",)


def environment_changes(sweeps: list[Sweep]) -> pd.DataFrame:
    """Environment columns whose values differ between the sweeps: one row per column, one column per sweep."""
    out = {}
    for col in ENVIRONMENT:
        if col in PER_ROW or not any(col in s.rows for s in sweeps):
            continue
        values = [", ".join(sorted(s.rows[col].astype(str).unique())) if col in s.rows else "" for s in sweeps]
        if len(set(values)) > 1:
            out[col] = values
    return pd.DataFrame(out, index=[s.label for s in sweeps]).T.rename_axis("environment").reset_index()


def machine_roofs(sweeps: list[Sweep]) -> pd.DataFrame:
    """The machine's own peaks and bandwidths where the sweeps measured them (``experiment=machine`` rows): when
    these moved, every timing on the machine moved with them, whatever the code did."""
    frames = []
    for s in sweeps:
        rows = s.rows[(s.rows["experiment"] == "machine") & (s.rows["status"] == "ok")]
        if rows.empty:
            return pd.DataFrame()
        value = rows["gflops"].fillna(rows["gb_per_s"]) if "gb_per_s" in rows else rows["gflops"]
        unit = np.where(rows["gflops"].notna(), "GFLOP/s", "GB/s")
        frames.append(pd.DataFrame({"roof": rows["variant"] + " (" + unit + ")", s.label: value.to_numpy()})
                      .groupby("roof").median())
    table = pd.concat(frames, axis=1).dropna()
    table["ratio"] = table.iloc[:, -1] / table.iloc[:, 0]
    return table.reset_index()
