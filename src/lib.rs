//! tokend — a token broker for automated access to web portals.
//!
//! Callers ask tokend for a login token for a site (a court portal such as `court_zxfw`);
//! tokend hands out a cached one when it is still valid, and otherwise picks an account, logs
//! in through the site's driver with bounded concurrency, stores the token encrypted and
//! records the acquisition. The contract is `SPEC.md`; this crate is the daemon and its CLI.
//!
//! # Layout
//!
//! `ls src` is the map; in the order an acquisition meets the parts (SPEC §1):
//!
//! - [`cli`]: the `tokend` command, one file per subcommand, with its client for the running
//!   daemon (`tokend token get`, `tokend optimize`, `tokend exec`, `tokend checkout`).
//! - [`config`]: the TOML file and the environment, checked once.
//! - [`daemon`]: `tokend serve` — the server that builds the parts in order and stops them in
//!   order, start-up checks, logging, systemd readiness, the grace of a stop, the process's
//!   own resources.
//! - [`api`]: one small handler per endpoint, their typed answers, the dashboard.
//! - [`broker`]: the pipeline — a cached token, or the slow path — and the owner of its
//!   state, over [`cache`] (in process or Redis, with the near cache; its sweep and health
//!   are `CacheActor`'s, in [`actors`]).
//! - [`redis`]: the one Redis link — the connection, its one breaker (a silent Redis is
//!   found out once and every policy falls back together), the key schema with its Cluster
//!   hash tags, the Lua scripts.
//! - [`policy`]: the slow path's decisions — which account (selection), logins per sliding
//!   hour (budget), a site that is down is paused (circuit), AIMD limits (adaptive), and the
//!   vocabulary of results and penalties (outcome); [`slots`]: limits in flight, in process
//!   (`ConcurrencyActor`) or shared through Redis.
//! - [`drivers`]: how tokend logs in — `http`, `command`, the court portals (built-in
//!   recipes), `derived` and `recipe` sites — with retries.
//! - [`lifecycle`]: around a token's life — captchas for a person, checkouts for a job,
//!   webhooks and chat robots.
//! - Storage: [`db`] (diesel over SQLite and PostgreSQL: schema, models, pool, migrations,
//!   queries by table, retention, the database's health), [`accounts`] (adding, importing,
//!   listing, changing accounts), [`vault`] (encryption at rest; secrets that never print),
//!   [`history`] (`HistoryActor`: rows on their way to SQL in batches, the spool, the
//!   retention job).
//! - Watching: [`watch`] (`MonitorActor`'s live counters, Prometheus, the last hour,
//!   concurrency recommendations) and [`actors`] (`CacheActor`, the cache's upkeep and
//!   health; `AlertActor`, health and alerts; `Actors`, the addresses of the five actix
//!   actors: `CacheActor`, `MonitorActor`, `ConcurrencyActor`, `HistoryActor`,
//!   `AlertActor`).
//! - [`error`]: the one error type, and its HTTP statuses and exit codes.

// The docs are for the people who work on tokend (`cargo doc --document-private-items`):
// they link to the private modules they describe.
#![allow(rustdoc::private_intra_doc_links)]

pub mod accounts;
pub mod actors;
pub(crate) mod api;
pub(crate) mod broker;
pub mod cache;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub(crate) mod drivers;
pub(crate) mod error;
pub mod history;
pub mod lifecycle;
pub mod policy;
pub mod redis;
pub mod slots;
pub mod vault;
pub(crate) mod watch;

pub use config::Config;
pub use error::{Error, Result};
