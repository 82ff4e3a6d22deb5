"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import pytest

from experiments.framework.store import flatten, to_csv
from infer_core.measure.files import atomic_path, write_text_atomic


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "a" / "results.csv"
    write_text_atomic(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert [p.name for p in path.parent.iterdir()] == ["results.csv"]
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"


def test_flatten_and_csv_cells():
    from infer_core.decoder.kv_cache import Strategy

    flat = flatten({"seed": 3, "kv": {"seq_len": 10, "strategies": [Strategy.concat, Strategy.prealloc]},
                    "bench": {"threads": None}})
    assert flat == {"seed": 3, "kv.seq_len": 10, "kv.strategies": "concat,prealloc", "bench.threads": None}
    text = to_csv([{"a": 0.1, "b": None, "c": float("nan"), "d": True}], ["a", "b", "c", "d", "e"])
    assert text == "a,b,c,d,e\n0.1,,,True,\n"


def test_report_tables_show_times_in_units_a_person_reads():
    import pandas as pd

    from experiments.reporting.tables import markdown_table, seconds

    assert [seconds(v) for v in (1.384, 0.0001615, 0.002, 3e-9, 0.0)] == ["1.384 s", "161.5 µs", "2 ms", "3 ns", "0 s"]
    table = markdown_table(pd.DataFrame({"time_median_s": [0.0001615], "tokens_per_s": [16110.0]}))
    assert table.splitlines()[-1] == "| 161.5 µs | 16110 |"  # a rate keeps its number
