//! What tokend measures of itself: [`monitor`] (`MonitorActor`: the live counters, duration
//! samples and cache hit/miss counts, which feed the other three), [`metrics`] (Prometheus),
//! [`timeline`] (the last hour, minute by minute) and [`recommend`] (concurrency limits
//! recommended from usage and history). The alerts that judge these figures are
//! `actors::alert`.
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod recommend;
pub(crate) mod timeline;
