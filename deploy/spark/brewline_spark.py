"""brewline's silver, gold and mart SQL on Spark, for lakes that outgrow one machine.

It runs the very SQL files brewline runs on DataFusion (crates/batch/sql/), in the order of
the manifest `steps.json` that `brewline batch export` writes:

  1. each bronze table becomes a temporary view under the name the SQL uses;
  2. each silver and gold step runs in order, and its result becomes a view for later steps;
  3. each result is written under the output root as `{layer}/{table}`.

Inputs and outputs are Parquet by default. With `--format delta`, Spark reads brewline's Delta
tables where they are and writes Delta: on a cluster with Delta Lake (delta-spark) and s3a,
point `--input`/`--output` at the lake, e.g. `spark-submit deploy/spark/brewline_spark.py
--manifest steps.json --format delta --input s3a://lake/brewline --output s3a://lake/brewline`;
on one machine, give delta-spark's jars too (`--delta-jars`, comma-separated; scripts/services'
`services_jars delta` gathers them from Maven Central).

Quality gates stay with brewline: run `brewline batch check --layer gold` on the result.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def session(master: str | None, driver_memory: str | None = None, delta_jars: str | None = None):
    """A Spark session; with `delta_jars` (a comma-separated list of delta-spark's jars, as
    scripts/services gathers them from Maven Central), one that reads and writes Delta."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("brewline-batch")
    if delta_jars:
        builder = (
            builder.config("spark.jars", delta_jars)
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config(
                "spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            )
            # Small tables' logs: replayed in a few tasks rather than Delta's default 50.
            .config("spark.databricks.delta.snapshotPartitions", "2")
            .config("spark.ui.showConsoleProgress", "false")
        )
    if master:
        builder = (
            builder.master(master)
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
        )
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    spark = builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run(spark, manifest: list[dict], source: str, fmt: str, output: str | None) -> dict:
    """Registers the bronze inputs, runs every step; returns {table: DataFrame}."""
    results = {}
    for t in manifest:
        location = os.path.join(source, t["table"] + (".parquet" if fmt == "parquet" else ""))
        if t["sql"] is None:
            spark.read.format(fmt).load(location).createOrReplaceTempView(t["name"])
            continue
        began = time.time()
        df = spark.sql(t["sql"]).cache()
        df.createOrReplaceTempView(t["name"])
        rows = df.count()
        results[t["table"]] = df
        if output:
            target = os.path.join(output, t["table"] + (".parquet" if fmt == "parquet" else ""))
            df.write.format(fmt).mode("overwrite").save(target)
        print(f"{t['table']:<36} {rows:>10} rows {time.time() - began:7.2f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="steps.json of `brewline batch export`")
    parser.add_argument("--input", required=True, help="root of the bronze tables")
    parser.add_argument("--output", help="root to write the results under")
    parser.add_argument("--format", default="parquet", choices=["parquet", "delta"])
    parser.add_argument("--master", help="e.g. local[2]; unset: spark-submit decides")
    parser.add_argument("--driver-memory", help="e.g. 4g (local mode: the whole Spark)")
    parser.add_argument(
        "--delta-jars",
        help="delta-spark's jars, comma-separated, for --format delta outside a cluster that has them",
    )
    args = parser.parse_args()
    with open(args.manifest) as f:
        manifest = json.load(f)
    spark = session(args.master, args.driver_memory, args.delta_jars)
    began = time.time()
    run(spark, manifest, args.input, args.format, args.output)
    print(f"spark: every step in {time.time() - began:.2f} s")
    spark.stop()


if __name__ == "__main__":
    main()
