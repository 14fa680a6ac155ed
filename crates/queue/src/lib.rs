//! Study assembly and the job queue, in PostgreSQL.
//!
//! - [`assembly`]: when a study is ready (stability time, open associations, contiguity) and
//!   promotion of ready study versions to analysis jobs.
//! - [`jobs`]: leased jobs with retries and backoff behind the [`jobs::JobQueue`] interface.
//! - [`reanalysis`]: analysis jobs for stored studies at a priority below live work.
//! - [`worker`]: the worker loop (claim, renew, complete/fail) woken by LISTEN/NOTIFY.
//!
//! Everything lives in the database, so it survives restarts and works with several node
//! processes sharing one PostgreSQL.

pub mod assembly;
pub mod jobs;
pub mod reanalysis;
pub mod worker;

pub use assembly::{Assembly, AssemblyConfig, ModelVersion, Promoted, SeriesGeometry};
pub use jobs::{Backoff, Job, JobKind, JobQueue, NewJob, PgQueue, QueueError, PART_OBJECTS, PART_SR};
pub use worker::{JobError, JobHandler, WorkerConfig};
