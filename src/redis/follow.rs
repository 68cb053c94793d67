//! Following the master through failovers (Redis Sentinel): the link asks the sentinels
//! ([`super::sentinel::Sentinels`]) when it has no master yet, after an error, a timeout or a
//! `READONLY`, from its probe, and whenever a sentinel announces `+switch-master`; it swaps
//! its connection when they name another master.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::sentinel::{self, Master, Sentinels};
use super::{breaker, topology, Inner, RedisLink, COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use crate::error::Result;

impl RedisLink {
    /// Asks the sentinels for the master and moves to it if it is another (one search at
    /// a time; a caller that waited for another's search uses its result).
    pub(super) async fn find_master(&self) -> Result<()> {
        let Some(sentinels) = &self.inner.sentinels else {
            return Ok(());
        };
        let seen = *self.inner.switches.borrow();
        let _searching = self.inner.finding_master.lock().await;
        if *self.inner.switches.borrow() != seen && self.current().is_some() {
            return Ok(());
        }
        let master = sentinels.find_master().await?;
        self.move_to(sentinels, master)
    }

    /// Swaps the connection to `master` (unless it is the current one).
    fn move_to(&self, sentinels: &Sentinels, master: Master) -> Result<()> {
        let address = master.address();
        self.inner
            .replicas
            .store(master.replicas, Ordering::Relaxed);
        let before = self.master();
        if before.as_deref() == Some(address.as_str()) && self.current().is_some() {
            return Ok(());
        }
        let (conn, client) = topology::server(sentinels.master_info(&master))?;
        *self.inner.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        *self
            .inner
            .subscribe_to
            .write()
            .unwrap_or_else(|p| p.into_inner()) = vec![client];
        *self.inner.master.write().unwrap_or_else(|p| p.into_inner()) = Some(address.clone());
        self.inner.switches.send_modify(|n| *n += 1);
        // The new master may answer at once: no need to wait for the probe's pause.
        if !self.is_up() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let link = self.clone();
                runtime.spawn(async move {
                    if let Some(mut conn) = link.current() {
                        let cmd = ::redis::cmd("PING");
                        let ping = cmd.query_async::<String>(&mut conn);
                        if let Ok(Ok(_)) = tokio::time::timeout(COMMAND_TIMEOUT, ping).await {
                            link.answered("master_switch");
                        }
                    }
                });
            }
        }
        match before {
            Some(before) => log::warn!(
                "event=redis_master_switched master_name={} from={before} to={address} replicas={}",
                sentinels.master_name(),
                master.replicas
            ),
            None => log::info!(
                "event=redis_master_found master_name={} master={address} replicas={}",
                sentinels.master_name(),
                master.replicas
            ),
        }
        Ok(())
    }

    /// With Sentinel: asks the sentinels again in the background (after an error, a timeout
    /// or a `READONLY`: the master may have changed).
    pub(super) fn spawn_find_master(&self) {
        if self.inner.sentinels.is_none() || self.inner.asking.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let link = self.clone();
                runtime.spawn(async move {
                    if let Err(e) = link.find_master().await {
                        log::debug!("event=redis_master_unknown error=\"{e}\"");
                    }
                    link.inner.asking.store(false, Ordering::Release);
                });
            }
            Err(_) => self.inner.asking.store(false, Ordering::Release),
        }
    }

    /// With Sentinel: starts the watcher of `+switch-master` (once, inside a runtime).
    pub(super) fn watch_switches(&self) {
        if self.inner.sentinels.is_none() || self.inner.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(watch_switches(Arc::downgrade(&self.inner)));
            }
            Err(_) => self.inner.watching.store(false, Ordering::Release),
        }
    }
}

/// Reads `+switch-master` from one sentinel after another for as long as the link lives;
/// each announcement for this master (and each new subscription, which may have missed
/// one) makes the link ask the sentinels again.
async fn watch_switches(link: Weak<Inner>) {
    let mut pause = Duration::from_millis(100);
    let mut turn = 0usize;
    loop {
        let (info, name) = {
            let Some(inner) = link.upgrade() else { return };
            let Some(sentinels) = &inner.sentinels else {
                return;
            };
            turn += 1;
            (
                sentinels.sentinel(turn % sentinels.len()).clone(),
                sentinels.master_name().to_string(),
            )
        };
        let subscribed = async {
            let client = ::redis::Client::open(info).ok()?;
            let mut pubsub = client.get_async_pubsub().await.ok()?;
            pubsub.subscribe(sentinel::SWITCH_CHANNEL).await.ok()?;
            Some(pubsub)
        };
        let Ok(Some(pubsub)) = tokio::time::timeout(CONNECT_TIMEOUT, subscribed).await else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(breaker::MAX_PAUSE);
            continue;
        };
        pause = Duration::from_millis(100);
        let Some(inner) = link.upgrade() else { return };
        RedisLink { inner }.spawn_find_master();
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            let Some(to) = sentinel::switched_to(&text, &name) else {
                continue;
            };
            let Some(inner) = link.upgrade() else { return };
            log::info!("event=redis_switch_announced master_name={name} to={to}");
            RedisLink { inner }.spawn_find_master();
        }
    }
}
