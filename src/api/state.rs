//! [`AppState`]: what every handler may use.

use std::sync::Arc;

use crate::actors::Actors;
use crate::broker::Broker;
use crate::cache::TokenCache;
use crate::config::Config;
use crate::db::Pool;
use crate::vault::crypto::SecretKey;

/// What every handler may use. Cheap to clone (`web::Data` wraps it in an `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub actors: Actors,
    pub pool: Pool,
    pub key: SecretKey,
    pub cache: TokenCache,
    pub broker: Broker,
    pub slots: crate::slots::Slots,
    /// The end of the stop's grace period, which waiting callers race against.
    pub shutdown: crate::daemon::shutdown::Shutdown,
    /// The host of `server.listen`, lower-cased: the daemon's own name for `Host`
    /// ([`super::same_origin`]), found once rather than on every request.
    pub listen_host: String,
}
