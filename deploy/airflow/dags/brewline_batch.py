"""brewline's batch layer as an Airflow DAG.

The same steps as `brewline batch run`, one task per layer, each followed by a task of its own
for the layer's quality gates (`brewline batch check`, exit 2 on a violation, which fails the
task and stops everything downstream), then the product affinity is published to the
recommender's Redis, and the lake's tables are compacted and vacuumed.

Every setting comes from Airflow Variables (or their defaults), so the DAG file holds no host
or credential:
  brewline_bin        the brewline binary                       [brewline]
  brewline_config     a brewline TOML config file (hosts, lake) [unset: BREWLINE_* env]
  brewline_schedule   a cron expression or preset               [@hourly]
  brewline_vacuum_retain  how long removed files stay (time travel) [7d]
Secrets (S3 keys, Redis passwords) belong in the worker's BREWLINE_* environment or the
config file it points to, never in this file.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

BIN = Variable.get("brewline_bin", default_var="brewline")
CONFIG = Variable.get("brewline_config", default_var="")
SCHEDULE = Variable.get("brewline_schedule", default_var="@hourly")
RETAIN = Variable.get("brewline_vacuum_retain", default_var="7d")

LAYERS = ("bronze", "silver", "gold")


def brewline(*args: str) -> str:
    """The shell command running `brewline ARGS` against the real engines."""
    command = [BIN]
    if CONFIG:
        command += ["--config", CONFIG]
    return " ".join(shlex.quote(a) for a in [*command, *args])


with DAG(
    dag_id="brewline_batch",
    description="brewline's lake: bronze, silver, gold, each checked by its gates",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs build on each other's bronze offsets: one at a time
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["brewline", "batch"],
) as dag:
    previous = None
    for layer in LAYERS:
        build = BashOperator(
            task_id=layer,
            bash_command=brewline("batch", "run", "--servers", "--layer", layer),
        )
        gate = BashOperator(
            task_id=f"gate_{layer}",
            bash_command=brewline("batch", "check", "--layer", layer),
            retries=0,  # a violated gate is data to fix, not a glitch to retry
        )
        if previous is not None:
            previous >> build
        build >> gate
        previous = gate
    publish = BashOperator(
        task_id="publish_affinity",
        bash_command=brewline("batch", "publish-affinity", "--servers"),
    )
    previous >> publish
    # Housekeeping after each run: small files compacted, files only versions older than the
    # retention read deleted (never those of the versions the serving manifest names).
    optimize = BashOperator(
        task_id="optimize",
        bash_command=brewline("batch", "optimize"),
    )
    vacuum = BashOperator(
        task_id="vacuum",
        bash_command=brewline("batch", "vacuum", "--retain", RETAIN),
    )
    publish >> optimize >> vacuum
