//! Job checkouts: an account held for one job (a filing of several steps on one portal
//! session) for a lease that its holder renews. While held, nobody else is handed the
//! account and nothing logs it in, so a single-session portal does not end the job's
//! session under it.
//!
//! In process the holds live in a map. With Redis they are shared by every instance:
//!
//! | key | value | expires |
//! |---|---|---|
//! | `{P}:checkout:SITE:ID` | the checkout id holding account ID of SITE | with the lease |
//! | `{P}:checkouts` | hash: checkout id → the [`Checkout`] as JSON | entries swept once their lease key is gone |
//!
//! The hold is the lease key (`SET NX PX`, in `src/redis/scripts/checkout_hold.lua`); renewal
//! and release are scripts that act only
//! when the key still names the caller's checkout, the same fencing as the slots'. Each
//! instance keeps a mirror of the holds for the hot path (a cached token is never handed out
//! for a held account); the mirror is re-read every [`SYNC_EVERY`], and a login checks Redis
//! itself before it runs, so another instance's checkout is respected by logins at once and
//! by cached hands-outs within [`SYNC_EVERY`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::redis::scripts::{CHECKOUT_HOLD, CHECKOUT_RELEASE, CHECKOUT_RENEW, CHECKOUT_SWEEP};
use crate::redis::{Admit, RedisLink};

/// How the checkouts name themselves in errors and logs.
const WHAT: &str = "redis checkouts";

/// How often the mirror of the holds is re-read from Redis, and expired leases swept.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The shortest and longest lease a caller may ask for.
pub const MIN_LEASE_SECS: f64 = 1.0;
pub const MAX_LEASE_SECS: f64 = 86_400.0;
/// The lease when a caller names none.
pub const DEFAULT_LEASE_SECS: f64 = 300.0;

/// One account held for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkout {
    pub checkout_id: String,
    /// The site the job asked for (its token is that site's).
    pub site_name: String,
    /// The site whose account it holds: `site_name`, or a derived site's root parent, whose
    /// accounts it uses. Holds are kept by this site and `credential_id`.
    pub accounts_site: String,
    pub account: String,
    pub credential_id: i64,
    /// What the holder said it is doing (a case number, a task id); free text.
    pub job: Option<String>,
    pub since: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
}

impl Checkout {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.lease_until > now
    }
}

/// The holds in Redis: the link, and the keys of one hold.
struct Shared {
    link: RedisLink,
}

impl Shared {
    fn lease_key(&self, site: &str, id: i64) -> String {
        self.link.keys().checkout(site, id)
    }

    fn hash_key(&self) -> String {
        self.link.keys().checkouts()
    }

    /// One of the checkout scripts on the lease key of `checkout` and the hash.
    async fn run(
        &self,
        script: &::redis::Script,
        checkout: &Checkout,
        id: &str,
        json: Option<String>,
    ) -> Result<i64> {
        let mut invocation =
            script.key(self.lease_key(&checkout.accounts_site, checkout.credential_id));
        invocation.key(self.hash_key()).arg(id);
        if let Some(json) = json {
            invocation.arg(lease_ms(checkout)).arg(json);
        }
        self.link.invoke(WHAT, Admit::WhenUp, &invocation).await
    }
}

/// The holds, in process or shared through Redis. Cheap to clone.
#[derive(Clone)]
pub struct Checkouts {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Option<Shared>,
    /// In process: the holds themselves. With Redis: the mirror the hot path reads.
    holds: RwLock<HashMap<(String, i64), Checkout>>,
    /// Whether any hold is known: the hot path's whole cost when none is.
    any: AtomicBool,
    /// Accounts whose holder's own token renewal is running (that login is allowed).
    renewing: Mutex<HashMap<(String, i64), usize>>,
}

/// Why a hold was refused: the account is held until then.
#[derive(Debug, Clone)]
pub struct HeldBy {
    pub until: DateTime<Utc>,
}

impl Checkouts {
    /// In process, or shared through the Redis link.
    pub fn new(redis: Option<RedisLink>) -> Checkouts {
        Checkouts {
            inner: Arc::new(Inner {
                shared: redis.map(|link| Shared { link }),
                holds: RwLock::default(),
                any: AtomicBool::new(false),
                renewing: Mutex::default(),
            }),
        }
    }

    /// Whether the holds are shared through Redis.
    pub fn shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// Whether this instance knows of any hold: the hot path's whole cost when none is.
    pub fn any(&self) -> bool {
        self.inner.any.load(Ordering::Acquire)
    }

    /// The hot path's question: the hold on (site, account), as this instance knows it.
    pub fn held(&self, site: &str, credential_id: i64) -> Option<Checkout> {
        if !self.any() {
            return None;
        }
        let holds = self.inner.holds.read().unwrap_or_else(|p| p.into_inner());
        holds
            .get(&(site.to_string(), credential_id))
            .filter(|c| c.live(Utc::now()))
            .cloned()
    }

    /// A login's question, asked of Redis itself: is the account held by a job (other than
    /// a renewal by its own holder)? On a Redis error the mirror answers.
    pub async fn held_now(&self, site: &str, credential_id: i64) -> Option<Checkout> {
        if self.renewing(site, credential_id) {
            return None;
        }
        let Some(shared) = &self.inner.shared else {
            return self.held(site, credential_id);
        };
        let cmd = ::redis::cmd("GET")
            .arg(shared.lease_key(site, credential_id))
            .clone();
        let holder: Result<Option<String>> = shared.link.query(WHAT, Admit::WhenUp, &cmd).await;
        match holder {
            Ok(None) => None,
            Ok(Some(id)) => {
                let mirror = self.held(site, credential_id);
                Some(mirror.filter(|c| c.checkout_id == id).unwrap_or(Checkout {
                    checkout_id: id,
                    site_name: site.to_string(),
                    accounts_site: site.to_string(),
                    account: String::new(),
                    credential_id,
                    job: None,
                    since: Utc::now(),
                    lease_until: Utc::now() + chrono::Duration::seconds(1),
                }))
            }
            Err(e) => {
                // While the link is down it has said so once; an error of Redis's own is
                // worth a line each time.
                if shared.link.is_up() {
                    log::warn!("event=checkout_check_failed site={site} credential_id={credential_id} error=\"{e}\" action=use_mirror");
                }
                self.held(site, credential_id)
            }
        }
    }

    /// Holds the account for `checkout`, or says until when another job holds it.
    pub async fn hold(&self, checkout: &Checkout) -> Result<std::result::Result<(), HeldBy>> {
        let key = (checkout.accounts_site.clone(), checkout.credential_id);
        let Some(shared) = &self.inner.shared else {
            let mut holds = self.inner.holds.write().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = holds.get(&key).filter(|c| c.live(Utc::now())) {
                return Ok(Err(HeldBy {
                    until: held.lease_until,
                }));
            }
            holds.insert(key, checkout.clone());
            self.inner.any.store(true, Ordering::Release);
            return Ok(Ok(()));
        };
        let answer = shared
            .run(
                &CHECKOUT_HOLD,
                checkout,
                &checkout.checkout_id,
                Some(to_json(checkout)),
            )
            .await?;
        if answer == 1 {
            self.mirror(checkout.clone());
            return Ok(Ok(()));
        }
        let until = Utc::now() + chrono::Duration::milliseconds(-answer);
        // Held by a job this instance did not know of yet: known now, so that the next
        // hand-out skips the account (the next sweep brings the holder's details).
        self.mirror(Checkout {
            checkout_id: String::new(),
            job: None,
            since: Utc::now(),
            lease_until: until,
            ..checkout.clone()
        });
        Ok(Err(HeldBy { until }))
    }

    /// Extends a live lease to `lease_until`; `None` when it had ended.
    pub async fn renew(&self, id: &str, lease_until: DateTime<Utc>) -> Result<Option<Checkout>> {
        let Some(mut checkout) = self.find(id).await? else {
            return Ok(None);
        };
        if !checkout.live(Utc::now()) {
            return Ok(None);
        }
        checkout.lease_until = lease_until;
        let Some(shared) = &self.inner.shared else {
            self.mirror(checkout.clone());
            return Ok(Some(checkout));
        };
        let renewed = shared
            .run(&CHECKOUT_RENEW, &checkout, id, Some(to_json(&checkout)))
            .await?;
        if renewed == 1 {
            self.mirror(checkout.clone());
            return Ok(Some(checkout));
        }
        Ok(None)
    }

    /// Ends a lease; `None` when it had ended (or never was).
    pub async fn release(&self, id: &str) -> Result<Option<Checkout>> {
        let Some(checkout) = self.find(id).await? else {
            return Ok(None);
        };
        self.forget(&checkout);
        let Some(shared) = &self.inner.shared else {
            return Ok(checkout.live(Utc::now()).then_some(checkout));
        };
        let released = shared.run(&CHECKOUT_RELEASE, &checkout, id, None).await?;
        Ok((released == 1).then_some(checkout))
    }

    /// One checkout by id, live or not yet swept.
    async fn find(&self, id: &str) -> Result<Option<Checkout>> {
        let Some(shared) = &self.inner.shared else {
            let holds = self.inner.holds.read().unwrap_or_else(|p| p.into_inner());
            return Ok(holds.values().find(|c| c.checkout_id == id).cloned());
        };
        let cmd = ::redis::cmd("HGET").arg(shared.hash_key()).arg(id).clone();
        let json: Option<String> = shared.link.query(WHAT, Admit::WhenUp, &cmd).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Every live checkout, oldest first (Redis: as stored there; else this process's).
    pub async fn list(&self) -> Result<Vec<Checkout>> {
        let now = Utc::now();
        let mut list: Vec<Checkout> = match &self.inner.shared {
            None => {
                let holds = self.inner.holds.read().unwrap_or_else(|p| p.into_inner());
                holds.values().cloned().collect()
            }
            Some(shared) => {
                let cmd = ::redis::cmd("HGETALL").arg(shared.hash_key()).clone();
                let all: HashMap<String, String> =
                    shared.link.query(WHAT, Admit::WhenUp, &cmd).await?;
                all.values()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect()
            }
        };
        list.retain(|c| c.live(now));
        list.sort_by_key(|a| a.since);
        Ok(list)
    }

    /// The live holds this instance knows of (the mirror with Redis), without a round trip.
    pub fn known(&self) -> Vec<Checkout> {
        let holds = self.inner.holds.read().unwrap_or_else(|p| p.into_inner());
        let now = Utc::now();
        holds.values().filter(|c| c.live(now)).cloned().collect()
    }

    /// When the first hold among `site`'s ends, for a `Retry-After`.
    pub fn first_lease_end(&self, site: &str) -> Option<DateTime<Utc>> {
        let holds = self.inner.holds.read().unwrap_or_else(|p| p.into_inner());
        let now = Utc::now();
        holds
            .values()
            .filter(|c| c.accounts_site == site && c.live(now))
            .map(|c| c.lease_until)
            .min()
    }

    /// Marks the holder's own token renewal of (site, account) as running, while the guard
    /// lives: that login is the holder's, not another job's.
    pub fn renewal(&self, site: &str, credential_id: i64) -> RenewalGuard {
        let key = (site.to_string(), credential_id);
        let mut renewing = self
            .inner
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *renewing.entry(key.clone()).or_default() += 1;
        RenewalGuard {
            checkouts: self.clone(),
            key,
        }
    }

    fn renewing(&self, site: &str, credential_id: i64) -> bool {
        let renewing = self
            .inner
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        renewing.contains_key(&(site.to_string(), credential_id))
    }

    fn mirror(&self, checkout: Checkout) {
        let mut holds = self.inner.holds.write().unwrap_or_else(|p| p.into_inner());
        holds.insert(
            (checkout.accounts_site.clone(), checkout.credential_id),
            checkout,
        );
        self.inner.any.store(true, Ordering::Release);
    }

    fn forget(&self, checkout: &Checkout) {
        let mut holds = self.inner.holds.write().unwrap_or_else(|p| p.into_inner());
        let key = (checkout.accounts_site.clone(), checkout.credential_id);
        if holds
            .get(&key)
            .is_some_and(|c| c.checkout_id == checkout.checkout_id)
        {
            holds.remove(&key);
        }
        self.inner.any.store(!holds.is_empty(), Ordering::Release);
    }

    /// Drops the leases that ended by themselves (each reported once, by whichever instance
    /// swept it) and, with Redis, re-reads the mirror. Returns the ended checkouts.
    pub async fn sweep(&self) -> Result<Vec<Checkout>> {
        let now = Utc::now();
        let Some(shared) = &self.inner.shared else {
            let mut holds = self.inner.holds.write().unwrap_or_else(|p| p.into_inner());
            let ended: Vec<Checkout> = holds.values().filter(|c| !c.live(now)).cloned().collect();
            holds.retain(|_, c| c.live(now));
            self.inner.any.store(!holds.is_empty(), Ordering::Release);
            return Ok(ended);
        };
        let cmd = ::redis::cmd("HGETALL").arg(shared.hash_key()).clone();
        let all: HashMap<String, String> = shared.link.query(WHAT, Admit::WhenUp, &cmd).await?;
        let mut live = HashMap::new();
        let mut ended = Vec::new();
        for (id, json) in all {
            let Ok(checkout) = serde_json::from_str::<Checkout>(&json) else {
                continue;
            };
            if checkout.live(now) {
                live.insert(
                    (checkout.accounts_site.clone(), checkout.credential_id),
                    checkout,
                );
                continue;
            }
            let dropped = shared.run(&CHECKOUT_SWEEP, &checkout, &id, None).await?;
            if dropped == 1 {
                ended.push(checkout);
            }
        }
        let mut holds = self.inner.holds.write().unwrap_or_else(|p| p.into_inner());
        self.inner.any.store(!live.is_empty(), Ordering::Release);
        *holds = live;
        Ok(ended)
    }
}

/// While it lives, the holder's own renewal login of an account is allowed.
pub struct RenewalGuard {
    checkouts: Checkouts,
    key: (String, i64),
}

impl Drop for RenewalGuard {
    fn drop(&mut self) {
        let mut renewing = self
            .checkouts
            .inner
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = renewing.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                renewing.remove(&self.key);
            }
        }
    }
}

fn lease_ms(checkout: &Checkout) -> i64 {
    (checkout.lease_until - Utc::now())
        .num_milliseconds()
        .max(1)
}

fn to_json(checkout: &Checkout) -> String {
    serde_json::to_string(checkout).unwrap_or_default()
}

/// A lease length asked for, checked: `lease_seconds` between 1 s and a day.
pub fn lease(seconds: Option<f64>) -> Result<Duration> {
    let secs = seconds.unwrap_or(DEFAULT_LEASE_SECS);
    if !secs.is_finite() || !(MIN_LEASE_SECS..=MAX_LEASE_SECS).contains(&secs) {
        return Err(Error::invalid(
            "lease_seconds",
            format!("must be between {MIN_LEASE_SECS} and {MAX_LEASE_SECS} seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout(id: &str, account: i64, secs: i64) -> Checkout {
        Checkout {
            checkout_id: id.into(),
            site_name: "s".into(),
            accounts_site: "s".into(),
            account: format!("u{account}"),
            credential_id: account,
            job: Some("case 1".into()),
            since: Utc::now(),
            lease_until: Utc::now() + chrono::Duration::seconds(secs),
        }
    }

    #[actix_rt::test]
    async fn one_hold_per_account_renew_release_and_expiry_in_process() {
        let checkouts = Checkouts::new(None);
        assert!(checkouts.held("s", 1).is_none());
        assert!(checkouts.hold(&checkout("a", 1, 60)).await.unwrap().is_ok());
        assert!(checkouts
            .hold(&checkout("b", 1, 60))
            .await
            .unwrap()
            .is_err());
        assert!(checkouts.hold(&checkout("c", 2, 60)).await.unwrap().is_ok());
        assert_eq!(checkouts.held("s", 1).unwrap().checkout_id, "a");
        let later = Utc::now() + chrono::Duration::seconds(120);
        assert_eq!(
            checkouts
                .renew("a", later)
                .await
                .unwrap()
                .unwrap()
                .lease_until,
            later
        );
        assert!(checkouts.release("a").await.unwrap().is_some());
        assert!(checkouts.release("a").await.unwrap().is_none());
        assert!(checkouts.held("s", 1).is_none());
        // A lease that ended is swept, once.
        assert!(checkouts.hold(&checkout("d", 3, -1)).await.unwrap().is_ok());
        assert!(checkouts.held("s", 3).is_none());
        let ended = checkouts.sweep().await.unwrap();
        assert_eq!(
            ended
                .iter()
                .map(|c| c.checkout_id.as_str())
                .collect::<Vec<_>>(),
            ["d"]
        );
        assert!(checkouts.sweep().await.unwrap().is_empty());
        assert!(checkouts.renew("d", later).await.unwrap().is_none());
    }

    #[test]
    fn lease_bounds_are_checked() {
        assert_eq!(lease(None).unwrap(), Duration::from_secs(300));
        assert!(lease(Some(0.5)).is_err());
        assert!(lease(Some(f64::NAN)).is_err());
        assert!(lease(Some(86_401.0)).is_err());
    }
}
