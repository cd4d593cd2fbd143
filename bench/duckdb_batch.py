"""brewline's silver, gold and mart SQL on DuckDB, for the batch benchmark (scripts/bench-batch):
the very SQL files of crates/batch/sql/, in the order of the manifest `steps.json` that
`brewline batch export` writes, over the same bronze exported as Parquet. Each step is
materialised as a table (later steps read it) and written as Parquet, as brewline and Spark do.

Run: python bench/duckdb_batch.py --manifest steps.json --input EXPORT --output OUT [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def parquet_of(location: str) -> str:
    """What read_parquet reads for an exported table: its file, or every file under its folder."""
    return os.path.join(location, "**", "*.parquet") if os.path.isdir(location) else location


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import duckdb

    with open(args.manifest) as f:
        manifest = json.load(f)
    db = duckdb.connect()
    db.execute(f"SET threads = {args.threads}")
    db.execute("SET TimeZone = 'UTC'")
    # DuckDB's max_by skips rows whose value is null; Spark's and brewline's keep them (a latest
    # change may set a column to null): its arg_max_null is the same function.
    db.execute("CREATE MACRO max_by(value, ordering) AS arg_max_null(value, ordering)")
    # What it spills goes beside its output (removed with it), not into the working folder.
    db.execute(f"SET temp_directory = '{os.path.join(args.output, '.spill')}'")
    began = time.time()
    for t in manifest:
        location = os.path.join(args.input, t["table"] + ".parquet")
        if t["sql"] is None:
            db.execute(
                f"CREATE VIEW {t['name']} AS SELECT * FROM read_parquet('{parquet_of(location)}')"
            )
            continue
        step = time.time()
        db.execute(f"CREATE TABLE {t['name']} AS {t['sql']}")
        target = os.path.join(args.output, t["table"] + ".parquet")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        db.execute(f"COPY {t['name']} TO '{target}' (FORMAT parquet)")
        rows = db.execute(f"SELECT count(*) FROM {t['name']}").fetchone()[0]
        print(f"{t['table']:<36} {rows:>10} rows {time.time() - step:7.2f} s", flush=True)
    print(f"duckdb {duckdb.__version__}: every step in {time.time() - began:.2f} s")


if __name__ == "__main__":
    main()
