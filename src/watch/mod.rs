//! What tokend measures of itself: [`metrics`] (Prometheus), [`timeline`] (the last hour,
//! minute by minute) and [`recommend`] (concurrency limits recommended from usage and
//! history). The actors that keep and judge these figures live in `actors`.
pub(crate) mod metrics;
pub(crate) mod recommend;
pub(crate) mod timeline;
