//! tokend — a token broker for automated access to web portals.
//!
//! Callers ask tokend for a login token for a site (a court portal such as `court_zxfw`);
//! tokend hands out a cached one when it is still valid, and otherwise picks an account, logs
//! in through the site's driver with bounded concurrency, stores the token encrypted and
//! records the acquisition. The contract is `SPEC.md`; this crate is the daemon and its CLI.
//!
//! # Layout
//!
//! In the order an acquisition meets them (SPEC §1):
//!
//! - Start-up: [`cli`] (the `tokend` command, thin), [`config`] (the TOML file and the
//!   environment, checked once), [`checks`] (the key against the stored accounts, login
//!   programs), [`server`] (starts and stops everything), [`notify`] (systemd),
//!   [`logging`], [`shutdown`] (what a stop cuts at the end of its grace).
//! - The API: [`api`] (one small handler per endpoint, the dashboard); [`client`] (the CLI's
//!   way to the running daemon); [`maintenance`] (`tokend optimize`); [`exec`] (`tokend exec`
//!   and `tokend checkout`).
//! - The hot path: [`broker`] (the pipeline: a cached token, or the slow path) over [`cache`]
//!   (in process or Redis, with the near cache and the breaker).
//! - The slow path: [`selection`] (which account: best, round robin, least recent),
//!   [`budget`] (logins per sliding hour), [`circuit`] (a site that is down is paused),
//!   [`slots`] (limits in flight, in process or shared through Redis) and [`adaptive`] (AIMD
//!   limits), [`drivers`] (how tokend logs in: `http`, `command`, the court portals —
//!   `court_zxfw` with SM2 and a captcha solver, `court_baoquan` —, `derived` sites and
//!   `recipe` sites whose login is a TOML file, with retries), [`outcome`] (the vocabulary of results, penalties and rejections).
//! - Storage: [`db`] (diesel over SQLite and PostgreSQL: schema, models, pool, migrations,
//!   queries by table), [`accounts`] (adding, importing, listing, changing accounts),
//!   [`crypto`] and [`secret`] (encryption at rest; secrets that never print), [`spool`]
//!   (history rows waiting for the database).
//! - Watching: [`actors`] (`CacheActor`, `ConcurrencyActor`, `MonitorActor`, `HistoryActor`,
//!   `AlertActor`), [`metrics`] (Prometheus), [`timeline`] (the last hour, minute by minute),
//!   [`optimize`] (concurrency recommendations), [`process`] (the process's own resources),
//!   [`terminal`] (reading a password without echo).
//! - Token lifecycle: [`captcha`] (captchas waiting for a person), [`webhook`] (alerts and
//!   captchas announced by POST, also to the chat robots of [`robots`]), [`checkout`] (an account held for one job); validity
//!   probes live in [`broker`].
//! - [`error`]: the one error type, and its HTTP statuses and exit codes.

pub mod accounts;
pub mod actors;
pub(crate) mod adaptive;
pub(crate) mod api;
pub(crate) mod broker;
pub mod budget;
pub mod cache;
pub(crate) mod captcha;
pub mod checkout;
pub(crate) mod checks;
pub(crate) mod circuit;
pub mod cli;
pub(crate) mod client;
pub mod config;
pub mod crypto;
pub mod db;
pub(crate) mod drivers;
pub(crate) mod error;
pub(crate) mod exec;
pub(crate) mod logging;
pub(crate) mod maintenance;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod optimize;
pub(crate) mod outcome;
pub(crate) mod process;
pub mod robots;
pub mod secret;
pub(crate) mod selection;
pub mod server;
pub(crate) mod shutdown;
pub mod slots;
pub mod spool;
pub(crate) mod terminal;
pub(crate) mod timeline;
pub(crate) mod webhook;

pub use config::Config;
pub use error::{Error, Result};
