//! tokend — a token broker for automated access to web portals.
//!
//! Callers ask tokend for a login token for a site (a court portal such as `court_zxfw`);
//! tokend hands out a cached one when it is still valid, and otherwise picks an account, logs
//! in through the site's driver with bounded concurrency, stores the token encrypted and
//! records the acquisition. The contract is `SPEC.md`; this crate is the daemon and its CLI.
//!
//! # Layout
//!
//! - [`config`]: the TOML file and environment, checked once at start-up.
//! - [`db`]: diesel over SQLite and PostgreSQL: schema, models, pool, migrations, queries.
//! - [`crypto`] and [`secret`]: encryption at rest; secrets that never print.
//! - [`accounts`]: adding, importing, listing and removing login accounts.
//! - [`cache`]: the cache store, in-process or Redis.
//! - [`drivers`]: how tokend logs in: `http`, `command`, the court portals (`court_zxfw` with
//!   SM2 and a captcha solver, `court_baoquan`) and `derived` sites; [`broker`] runs an
//!   acquisition through them.
//! - [`actors`]: `CacheActor`, `ConcurrencyActor`, `MonitorActor`, `HistoryActor`, `AlertActor`.
//! - [`api`]: the actix-web handlers; [`server`] starts and stops everything; [`notify`]
//!   tells systemd.
//! - [`cli`]: the `tokend` command; [`error`]: the one error type.
//! - [`checks`]: start-up checks (the key against the stored accounts, login programs);
//!   [`shutdown`]: what a stop cuts at the end of its grace; [`terminal`]: reading a password
//!   without echo.

pub mod accounts;
pub mod actors;
pub mod adaptive;
pub mod api;
pub mod broker;
pub mod budget;
pub mod cache;
pub mod checks;
pub mod circuit;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod db;
pub mod drivers;
pub mod error;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod optimize;
pub mod outcome;
pub mod process;
pub mod secret;
pub mod selection;
pub mod server;
pub mod shutdown;
pub mod slots;
pub mod spool;
pub mod terminal;
pub mod timeline;

pub use config::Config;
pub use error::{Error, Result};
