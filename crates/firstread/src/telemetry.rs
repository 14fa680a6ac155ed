//! Logging set-up: `tracing` with a pretty or JSON formatter and an `EnvFilter`
//! (`RUST_LOG` wins over the configured filter).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a second call is a no-op (tests start several nodes).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

/// Upper bounds (seconds) of the stage-duration histogram buckets.
const STAGE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// Upper bounds (seconds) of the per-instance ingest step buckets (0.1 ms to 1 s).
const INGEST_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The process's Prometheus recorder, installed on first use (several in-process nodes share
/// it); `None` when another recorder was installed first.
pub fn metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("firstread_stage_seconds".into()),
                    STAGE_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("firstread_ingest_seconds".into()),
                    INGEST_BUCKETS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("firstread_associations_total", "DICOM associations accepted");
    describe_gauge!("firstread_associations_open", "DICOM associations open now");
    describe_counter!("firstread_instances_received_total", "Instances stored and acknowledged, by protocol");
    describe_counter!("firstread_instances_failed_total", "Instances refused or not stored, by protocol");
    describe_counter!("firstread_received_bytes_total", Unit::Bytes, "Bytes of instances received");
    describe_gauge!("firstread_studies", "Studies by assembly/analysis state");
    describe_gauge!("firstread_jobs", "Jobs by kind and state");
    describe_histogram!("firstread_stage_seconds", Unit::Seconds, "Duration of each stage of a first read");
    describe_histogram!(
        "firstread_ingest_seconds",
        Unit::Seconds,
        "Duration of each step of storing one instance before its acknowledgement (begin, receive, finish, place, index)"
    );
    describe_counter!("firstread_export_failures_total", "Failed attempts to send results to a destination");
}
