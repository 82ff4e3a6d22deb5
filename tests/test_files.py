"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import pytest

from experiments.framework.store import flatten, to_csv
from infer_core.files import atomic_path, write_text_atomic


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
    from infer_core.kv_cache import Strategy

    flat = flatten({"seed": 3, "kv": {"seq_len": 10, "strategies": [Strategy.concat, Strategy.prealloc]},
                    "bench": {"threads": None}})
    assert flat == {"seed": 3, "kv.seq_len": 10, "kv.strategies": "concat,prealloc", "bench.threads": None}
    text = to_csv([{"a": 0.1, "b": None, "c": float("nan"), "d": True}], ["a", "b", "c", "d", "e"])
    assert text == "a,b,c,d,e\n0.1,,,True,\n"
