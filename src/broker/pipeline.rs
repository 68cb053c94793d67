//! [`Broker`]: the pipeline's handle and its front door. [`Broker::acquire`] takes the hot
//! path (a cached token with enough life left, no actor, no database) and otherwise runs the
//! slow path of [`super::login`] as a task of its own; invalidation and the single-flight
//! locks live here too.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::Addr;
use chrono::{DateTime, Utc};

use super::in_use::InUse;
use super::request::{AcquireRequest, AcquiredToken, Source};
use crate::cache::near::OpenedToken;
use crate::cache::{CacheKind, CachedToken, TokenCache};
use crate::config::{seconds, validate_site_name, Config, SiteConfig};
use crate::db::Pool;
use crate::drivers::LoginDriver;
use crate::error::{Error, Result};
use crate::history::HistoryRecorder;
use crate::policy::adaptive::AdaptiveLimits;
use crate::policy::budget::LoginBudgets;
use crate::policy::circuit::{CircuitPolicy, Circuits};
use crate::policy::outcome::TriggerReason;
use crate::policy::selection::Strategy;
use crate::slots::Slots;
use crate::vault::crypto::SecretKey;
use crate::watch::metrics::Metrics;
use crate::watch::monitor::MonitorActor;

/// The single-flight key: one login at a time per (site, account).
pub(super) type FlightKey = (String, i64);

/// What the single-flight lock of an account guards: the last login's failure, so that the
/// callers that waited for that login get its result instead of logging in again.
#[derive(Default)]
pub(crate) struct Flight {
    pub(super) last_failure: Option<(Instant, crate::drivers::LoginFailure)>,
}

/// The pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    pub(super) inner: Arc<Inner>,
}

/// The pipeline's state, and its one owner: every [`Broker`] clone shares this `Inner`, and
/// only the pipeline's files (`broker/`) reach into it. It holds three kinds of thing:
///
/// - Parts built before the broker and handed over whole ([`BrokerParts`]: `config`, `pool`,
///   `key`, `cache`, `slots`, `monitor`, `history`, `circuits`, `metrics`, `budgets`,
///   `adaptive`, `checkouts`): shared handles that guard their own state (the cache, the
///   slots, the actors' addresses, the policies shared through Redis).
/// - Built by [`Broker::new`] and read-only since: `drivers`, and `turns` (atomics, no lock).
/// - The pipeline's own mutable maps, each behind a `std::sync::Mutex` of its own:
///
/// | map | guards | locked by |
/// |---|---|---|
/// | `flights` | the single-flight lock of each (site, account), held weakly | `Broker::flight` (logins), `active_locks`, `drop_idle_locks` (`/resource-usage`) |
/// | `refreshing` | background refreshes running or backing off | `refresh.rs`: at scheduling, and when the refresh ends |
/// | `running` | logins in progress, for the stop | `login.rs` (a login starts, picks its account, ends), the stop (`daemon::shutdown`) |
/// | `in_use` | tokens handed out on sites with validity probes | `probe.rs`: marked when handed out, read and forgotten by the probes |
/// | `protocol` | per site, the streak of `failed` answers from different accounts | `login.rs`, after a login's answer |
///
/// (`captchas` and `checkouts` keep maps of their own the same way, inside their types.)
///
/// Lock order: each of these `std` mutexes is a leaf. It is taken for one look-up or update
/// of its map and let go before anything else: never held across an `.await`, never while
/// another of them is taken, so no order between them exists and none can deadlock. A
/// poisoned one is taken over (`into_inner`): the maps stay consistent after each single
/// operation. The locks that are held for long are the per-account flight locks
/// (`tokio::sync::Mutex<Flight>`, held across a whole login); a login takes, in this order,
/// its flight lock, the account's shared lock in Redis (when configured), then a login slot
/// ([`Slots`]), and holds them while it logs in; none of the `std` mutexes
/// above is taken while waiting for one of them.
pub(super) struct Inner {
    pub(super) config: Arc<Config>,
    pub(super) pool: Pool,
    pub(super) key: SecretKey,
    pub(super) cache: TokenCache,
    pub(super) drivers: HashMap<String, LoginDriver>,
    pub(super) slots: Slots,
    pub(super) monitor: Addr<MonitorActor>,
    pub(super) history: HistoryRecorder,
    /// Per-account login locks; weak, so a lock nobody holds or waits for goes away.
    pub(super) flights: Mutex<HashMap<FlightKey, Weak<tokio::sync::Mutex<Flight>>>>,
    /// The sites' circuits (SPEC §11), shared through Redis when configured.
    pub(super) circuits: Circuits,
    /// The Prometheus side, for the circuit gauges.
    pub(super) metrics: Arc<Metrics>,
    /// Logins per sliding hour, per site and per account (SPEC §12).
    pub(super) budgets: LoginBudgets,
    /// Adaptive slot limits per site (SPEC §12).
    pub(super) adaptive: AdaptiveLimits,
    /// Round-robin turns per site, when Redis does not keep them.
    pub(super) turns: HashMap<String, AtomicU64>,
    /// Each site's place in `config.sites`, by name: a look-up per request that does not grow
    /// with the number of sites.
    pub(super) site_index: foldhash::HashMap<String, usize>,
    /// Background refreshes running or backing off: until when, after how many failures.
    pub(super) refreshing: Mutex<HashMap<FlightKey, (Instant, u32)>>,
    /// Logins in progress, for the stop (issue 15: cut logins are logged and recorded).
    pub(super) running: crate::daemon::shutdown::RunningLogins,
    /// Tokens handed out on sites with validity probes (SPEC §13).
    pub(super) in_use: InUse,
    /// Captchas waiting for a person (SPEC §13).
    pub(super) captchas: crate::lifecycle::captcha::Captchas,
    /// Accounts held by job checkouts.
    pub(super) checkouts: crate::lifecycle::checkout::Checkouts,
    /// `failed` answers per site from different accounts in a row (issue 21).
    pub(super) protocol: crate::policy::circuit::ProtocolWatch,
}

/// Everything the broker works with.
pub struct BrokerParts {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub key: SecretKey,
    pub cache: TokenCache,
    pub slots: Slots,
    pub monitor: Addr<MonitorActor>,
    pub history: HistoryRecorder,
    pub circuits: Circuits,
    pub metrics: Arc<Metrics>,
    pub budgets: LoginBudgets,
    pub adaptive: AdaptiveLimits,
    pub checkouts: crate::lifecycle::checkout::Checkouts,
    /// Where pending captchas are announced (SPEC §13).
    pub webhook: crate::lifecycle::webhook::Webhook,
}

impl Broker {
    pub fn new(parts: BrokerParts) -> Result<Broker> {
        let default_ttl = seconds(parts.config.cache.default_token_ttl);
        let captchas = crate::lifecycle::captcha::Captchas::new(
            seconds(parts.config.retry.captcha_answer_timeout),
            parts.webhook.clone(),
        );
        let drivers = parts
            .config
            .sites
            .iter()
            .map(|site| {
                let driver = LoginDriver::with_context(
                    site,
                    default_ttl,
                    &parts.config.sites,
                    Some(parts.metrics.clone()),
                )?
                .with_captchas(captchas.clone());
                Ok((site.name.clone(), driver))
            })
            .collect::<Result<_>>()?;
        let turns: Vec<String> = parts.config.sites.iter().map(|s| s.name.clone()).collect();
        let site_index = site_index(&parts.config.sites);
        Ok(Broker {
            inner: Arc::new(Inner {
                config: parts.config,
                pool: parts.pool,
                key: parts.key,
                cache: parts.cache,
                drivers,
                slots: parts.slots,
                monitor: parts.monitor,
                history: parts.history,
                circuits: parts.circuits,
                metrics: parts.metrics,
                budgets: parts.budgets,
                adaptive: parts.adaptive,
                turns: turns.into_iter().map(|n| (n, AtomicU64::new(0))).collect(),
                site_index,
                flights: Mutex::default(),
                refreshing: Mutex::default(),
                running: crate::daemon::shutdown::RunningLogins::default(),
                in_use: InUse::default(),
                captchas,
                checkouts: parts.checkouts,
                protocol: crate::policy::circuit::ProtocolWatch::default(),
            }),
        })
    }

    /// The captchas waiting for a person.
    pub fn captchas(&self) -> &crate::lifecycle::captcha::Captchas {
        &self.inner.captchas
    }

    /// The logins in progress (for the stop, see [`crate::daemon::shutdown`]).
    pub fn running_logins(&self) -> &crate::daemon::shutdown::RunningLogins {
        &self.inner.running
    }

    pub(crate) fn site(&self, name: &str) -> Result<&SiteConfig> {
        validate_site_name("site_name", name)?;
        self.inner
            .site_index
            .get(name)
            .and_then(|&at| self.inner.config.sites.get(at))
            .ok_or_else(|| Error::UnknownSite(name.to_string()))
    }

    /// The site whose accounts `site` uses: itself, or a derived site's root parent (§13).
    pub(crate) fn account_owner<'a>(&'a self, site: &'a SiteConfig) -> &'a SiteConfig {
        crate::config::court::account_owner(&self.inner.config.sites, site)
    }

    /// For a derived site, the name of the site whose accounts it uses; `None` otherwise.
    pub fn accounts_site(&self, name: &str) -> Option<String> {
        let site = self.inner.config.site(name)?;
        let owner = self.account_owner(site);
        (owner.name != site.name).then(|| owner.name.clone())
    }

    /// Hands out a valid token for the site (SPEC §1).
    pub async fn acquire(&self, request: AcquireRequest) -> Result<AcquiredToken> {
        self.acquire_as(request, TriggerReason::TokenNeeded).await
    }

    pub async fn acquire_as(
        &self,
        request: AcquireRequest,
        trigger: TriggerReason,
    ) -> Result<AcquiredToken> {
        Ok(self.acquire_shared(request, trigger).await?.into_token())
    }

    /// A cache hit answered at once, without waiting on anything: a plain acquire (or one by
    /// `credential_id`) whose token is at hand ([`TokenCache::token_at_hand`]). `None` when
    /// the request needs [`Broker::acquire_shared`]: a miss, an account named by name, a
    /// round-robin turn, `force_refresh`, a token too close to its expiry or one a job holds.
    /// What it hands out, counts and schedules is what `acquire_shared` would for a hit; the
    /// handler's future stays small (no login path inside it), so a hit allocates little.
    pub fn acquire_at_hand(&self, request: &AcquireRequest) -> Option<Result<Acquired>> {
        if request.force_refresh || request.account.is_some() {
            return None;
        }
        // An unknown or malformed name is `acquire_shared`'s to refuse.
        let site = self
            .inner
            .site_index
            .get(request.site_name.as_str())
            .and_then(|&at| self.inner.config.sites.get(at))?;
        let credential_id = request.credential_id;
        if credential_id.is_none() && site.selection == Strategy::RoundRobin {
            return None;
        }
        if let Some(id) = credential_id {
            if let Err(e) = self.refuse_if_held(site, id) {
                return Some(Err(e));
            }
        }
        let now = Utc::now();
        let hit = self
            .inner
            .cache
            .token_at_hand(&site.name, credential_id)
            .filter(|hit| {
                hit.entry
                    .is_fresh(now, self.inner.config.cache.refresh_ahead)
            })?;
        let entry = &hit.entry;
        if credential_id.is_none() && self.held(site, entry.credential_id).is_some() {
            return None;
        }
        self.count_hit(site, entry, now);
        self.mark_in_use(site, entry.credential_id, &entry.account);
        Some(Ok(Acquired::Cached(hit)))
    }

    /// The same, with a cache hit handed out as the cache keeps it ([`Acquired::Cached`]):
    /// what the HTTP answer of `/tokens/acquire` is made from, with nothing copied.
    pub async fn acquire_shared(
        &self,
        request: AcquireRequest,
        trigger: TriggerReason,
    ) -> Result<Acquired> {
        let site = self.site(&request.site_name)?;
        let arrived = Utc::now();
        let credential_id = match (request.credential_id, &request.account) {
            (Some(id), _) => Some(id),
            (None, Some(account)) => Some(self.credential_id_of(site, account).await?),
            (None, None) => None,
        };
        if let Some(id) = credential_id {
            self.refuse_if_held(site, id)?;
        }
        // `round_robin` hands out the accounts in turn (issue 21): a plain acquire takes the
        // next turn, served by that account's cached token or else a login starting with it.
        let turn = match (credential_id, site.selection) {
            (None, Strategy::RoundRobin) => Some(self.next_turn(site).await),
            _ => None,
        };
        if !request.force_refresh {
            if let Some(hit) = self.cached_for(site, credential_id, turn).await {
                // The site's newest token may be of an account a job holds: another then.
                let entry = &hit.entry;
                if credential_id.is_some() || self.held(site, entry.credential_id).is_none() {
                    self.mark_in_use(site, entry.credential_id, &entry.account);
                    return Ok(Acquired::Cached(hit));
                }
            }
        }
        let trigger = if request.force_refresh && trigger == TriggerReason::TokenNeeded {
            TriggerReason::ForceRefresh
        } else {
            trigger
        };
        // The slow path runs as a task of its own: a caller that goes away (client
        // disconnect) or stops waiting (acquisition_timeout) does not cut a login short, so
        // its slot, history row and metrics are always settled, the callers waiting on the
        // same login still get its token, and a login that outlives its caller (a person
        // solving a captcha) still fills the cache for the next one.
        let broker = self.clone();
        let site_name = site.name.clone();
        let force = request.force_refresh;
        let task = actix_web::rt::spawn(async move {
            let site = broker.site(&site_name)?;
            broker
                .login(site, credential_id, turn, force, trigger, arrived)
                .await
        });
        let timeout = seconds(self.inner.config.concurrency.acquisition_timeout);
        let answer = match tokio::time::timeout(timeout, task).await {
            Ok(joined) => joined.map_err(|e| Error::Internal(format!("acquisition task: {e}")))?,
            Err(_) => Err(Error::Timeout(format!(
                "no token for site `{}` within acquisition_timeout ({:.0}s); a login that is still running goes on and its token will be cached",
                site.name,
                timeout.as_secs_f64()
            ))),
        };
        if let Ok(token) = &answer {
            self.mark_in_use(site, token.credential_id, &token.account);
        }
        answer.map(Acquired::Obtained)
    }

    /// The hot path of an acquire: the named account's cached token, the one of the account
    /// whose `turn` it is (round robin), or else the site's newest.
    async fn cached_for(
        &self,
        site: &SiteConfig,
        credential_id: Option<i64>,
        turn: Option<u64>,
    ) -> Option<Arc<OpenedToken>> {
        match turn {
            Some(turn) => {
                let id = self.account_in_turn(site, turn).await?;
                self.cached(site, Some(id)).await
            }
            None => self.cached(site, credential_id).await,
        }
    }

    /// A cached token with enough life left, or `None`.
    async fn cached(
        &self,
        site: &SiteConfig,
        credential_id: Option<i64>,
    ) -> Option<Arc<OpenedToken>> {
        let cache = &self.inner.cache;
        let now = Utc::now();
        let refresh_ahead = self.inner.config.cache.refresh_ahead;
        let fresh = cache
            .token(&site.name, credential_id)
            .await
            .filter(|hit| hit.entry.is_fresh(now, refresh_ahead));
        let Some(hit) = fresh else {
            cache.counters.miss(CacheKind::Token);
            return None;
        };
        self.count_hit(site, &hit.entry, now);
        Some(hit)
    }

    /// A hit: counted, and the token's refresh started when it is due.
    fn count_hit(&self, site: &SiteConfig, entry: &CachedToken, now: DateTime<Utc>) {
        self.inner.cache.counters.hit(CacheKind::Token);
        if self.inner.config.cache.background_refresh
            && now >= entry.refresh_at
            && entry.refresh_at < entry.expires_at
        {
            self.schedule_refresh(site, entry);
        }
    }

    /// Drops the token of (site, account) from cache and store, so the next acquire logs in.
    /// Answers whether there was a stored one, and whether the cached entries could be read.
    pub async fn invalidate(&self, site_name: &str, account: &str) -> Result<Invalidated> {
        let done = self.invalidate_one(site_name, account).await?;
        self.invalidate_derived(site_name, account).await;
        Ok(done)
    }

    async fn invalidate_one(&self, site_name: &str, account: &str) -> Result<Invalidated> {
        let site = self.site(site_name)?;
        let id = self.credential_id_of(site, account).await?;
        // The stored token goes first: an acquire that misses the cache in between would
        // otherwise find the row and put the rejected token back into the cache. One that
        // read the row just before is refused by the token's tombstone.
        let (site_owned, account_owned) = (site.name.clone(), account.to_string());
        let stored = self
            .inner
            .pool
            .run(move |conn| crate::db::tokens::take(conn, &site_owned, &account_owned))
            .await?;
        let dropped = stored
            .as_ref()
            .map(|t| (t.token.as_str(), t.expires_at.and_utc()));
        let cache_read = self.inner.cache.invalidate(&site.name, id, dropped).await;
        let removed = stored.is_some();
        log::info!(
            "event=token_invalidated site={} account={account} stored={removed} cache_entries_read={cache_read}",
            site.name
        );
        Ok(Invalidated {
            stored_token_removed: removed,
            cache_entries_read: cache_read,
        })
    }

    /// A parent's token is gone: so are the tokens derived from it, and from those (SPEC
    /// §13), which the portal would refuse once it refuses their parent.
    async fn invalidate_derived(&self, site_name: &str, account: &str) {
        let sites = &self.inner.config.sites;
        let mut parents = vec![site_name.to_string()];
        // The chains are acyclic (checked at start); the bound is a second guard.
        for _ in 0..sites.len() {
            let Some(parent) = parents.pop() else { break };
            for child in sites
                .iter()
                .filter(|s| s.is_derived() && s.from_site == parent)
            {
                match self.invalidate_one(&child.name, account).await {
                    Ok(done) => log::info!(
                        "event=derived_token_invalidated site={} parent={parent} account={account} stored={} cache_entries_read={}",
                        child.name,
                        done.stored_token_removed,
                        done.cache_entries_read,
                    ),
                    Err(e) => log::warn!(
                        "event=derived_token_not_invalidated site={} parent={parent} account={account} error=\"{e}\"",
                        child.name
                    ),
                }
                parents.push(child.name.clone());
            }
        }
    }

    /// The circuit rules of a site: its own overrides, else `[circuit]`.
    pub(crate) fn circuit_policy(&self, site: &SiteConfig) -> CircuitPolicy {
        let (failure_threshold, open) = self.inner.config.circuit_of(site);
        CircuitPolicy {
            failure_threshold,
            open: seconds(open),
            // A probe holds the half-open state for as long as one login may take.
            probe_lease: seconds(self.inner.config.retry.login_timeout) + Duration::from_secs(5),
        }
    }

    /// Waits for everything recorded so far to reach the history table (tests, shutdown);
    /// see [`HistoryRecorder::flush`].
    pub async fn flush_history(&self) -> Result<usize> {
        self.inner.history.flush().await
    }

    /// Single-flight locks in this process that are held or waited for.
    pub fn active_locks(&self) -> usize {
        let flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Forgets locks nobody holds or waits for; returns how many.
    pub fn drop_idle_locks(&self) -> usize {
        let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        let before = flights.len();
        flights.retain(|_, w| w.strong_count() > 0);
        before - flights.len()
    }

    pub(super) fn flight(&self, key: FlightKey) -> Arc<tokio::sync::Mutex<Flight>> {
        let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = flights.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        flights.retain(|_, weak| weak.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(Flight::default()));
        flights.insert(key, Arc::downgrade(&lock));
        lock
    }
}

fn site_index(sites: &[SiteConfig]) -> foldhash::HashMap<String, usize> {
    sites
        .iter()
        .enumerate()
        .map(|(at, site)| (site.name.clone(), at))
        .collect()
}

/// What an acquire hands out.
pub enum Acquired {
    /// A cached token, as the cache keeps it: shared, its HTTP answer serialized once
    /// ([`OpenedToken::hit_answer`]).
    Cached(Arc<OpenedToken>),
    /// A token a login (this one or one waited for) just obtained.
    Obtained(AcquiredToken),
}

impl Acquired {
    /// The answer as a value of its own (copies a cached token's fields).
    pub fn into_token(self) -> AcquiredToken {
        match self {
            Acquired::Cached(hit) => AcquiredToken::from_hit(&hit, Source::Cache),
            Acquired::Obtained(token) => token,
        }
    }
}

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidated {
    /// There was a stored token, now deleted.
    pub stored_token_removed: bool,
    /// Every cached entry of the token could be read, so each got its tombstone; `false`
    /// when the cache could not say (its entries are deleted, but a late writer of the
    /// unread token is not refused).
    pub cache_entries_read: bool,
}
