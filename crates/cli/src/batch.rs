//! `brewline batch run`: the batch layer over the embedded engines' log and source, into the
//! lake (a local folder by default).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use brewline_batch::{Lake, RunReport, Sources};
use brewline_ports::SourceDb;

use crate::args::BatchRunArgs;
use crate::config::Config;
use crate::embedded::EmbeddedPipeline;

/// The lake of `config`: `batch.lake`, else `lake/` in the data dir.
pub fn lake(config: &Config, data_dir: &Path) -> Lake {
    match &config.batch.lake {
        Some(root) => Lake::at(root.clone()),
        None => Lake::at(data_dir.join("lake").to_string_lossy().into_owned()),
    }
}

/// One batch run over an embedded pipeline; the report is written next to the lake's tables
/// as JSON (`_reports/{run}.json`).
pub async fn run_embedded(pipeline: &EmbeddedPipeline, lake: &Lake) -> anyhow::Result<RunReport> {
    let reference = pipeline.dir.source.load_reference().await?;
    let t = &pipeline.config.topics;
    let sources = Sources {
        log: &pipeline.dir.log,
        orders_topic: &t.orders,
        order_details_topic: &t.order_details,
        reference: &reference,
    };
    let report = brewline_batch::run(&sources, lake)
        .await
        .context("batch run failed")?;
    let reports = PathBuf::from(lake.root()).join("_reports");
    if std::fs::create_dir_all(&reports).is_ok() {
        let path = reports.join(format!("{}.json", report.run_id));
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

pub async fn run(config: Config, args: BatchRunArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.resolve(&config);
    let mut config = config;
    if let Some(l) = args.lake {
        config.batch.lake = Some(l);
    }
    let lake = lake(&config, &data_dir);
    let pipeline = EmbeddedPipeline::open(config, &data_dir)?;
    pipeline.prepare().await?;
    let report = run_embedded(&pipeline, &lake).await?;
    print!("{}", report.summary());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
