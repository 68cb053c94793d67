//! The listener of the channel of changes: with Redis, every instance subscribes to
//! [`crate::redis::Keys::changes_channel`] on a connection of its own and tells its
//! [`NearCache`] what changed, so that near copies are served without a round trip and still
//! never outlive a change made on another instance by more than the time it takes to hear it.
//! A subscription that ends (Redis restarted, the connection cut) is made again, with a
//! pause that doubles up to [`MAX_PAUSE`]; until then copies are current for
//! [`super::near::NEAR_WINDOW`] only. When the sentinels name another master, the
//! subscription moves there at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::near::NearCache;
use crate::redis::RedisLink;

/// The first pause after a failed subscription.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The listener's task; it ends when this is dropped (with the last handle on the cache).
pub struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Listener {
    /// Starts listening for `near` (needs a Tokio runtime).
    pub fn start(link: RedisLink, near: &Arc<NearCache>) -> Listener {
        Listener(tokio::spawn(listen(link, Arc::downgrade(near))))
    }
}

async fn listen(link: RedisLink, near: Weak<NearCache>) {
    let channel = link.keys().changes_channel();
    let mut pause = FIRST_PAUSE;
    let mut failing = false;
    loop {
        match link.subscribe(&channel).await {
            Ok(subscribed) => {
                let Some(cache) = near.upgrade() else { return };
                cache.hearing(true);
                drop(cache);
                if failing {
                    log::info!("event=cache_changes_heard channel={channel}");
                }
                pause = FIRST_PAUSE;
                let mut messages = subscribed.into_on_message();
                let mut switches = link.switches();
                switches.mark_unchanged();
                let switched = loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        // Sentinel named another master: subscribe there.
                        _ = switches.changed() => break true,
                    };
                    let Some(message) = message else { break false };
                    let Some(cache) = near.upgrade() else { return };
                    match message.get_payload::<String>() {
                        // This process's own change: its near cache already holds it.
                        Ok(change) => {
                            if let Some(key) = link.foreign_change(&change) {
                                cache.heard(key);
                            }
                        }
                        // Unreadable: forget everything rather than guess.
                        Err(_) => cache.heard("*"),
                    }
                };
                let Some(cache) = near.upgrade() else { return };
                cache.hearing(false);
                drop(cache);
                if switched {
                    log::info!("event=cache_changes_resubscribing channel={channel} reason=master_switched");
                    continue;
                }
                // The connection ended under the subscription: a reset, or Redis gone. The
                // link counts it as an error; the next try tells which (a refused
                // connection is an outage at once), even when no request asks Redis.
                link.connection_dropped("redis cache changes", "the subscription ended");
                log::warn!("event=cache_changes_unheard channel={channel} reason=\"the subscription ended\" near_window_ms={}", super::near::NEAR_WINDOW.as_millis());
                failing = true;
                tokio::time::sleep(FIRST_PAUSE).await;
            }
            Err(e) => {
                if !failing {
                    log::warn!("event=cache_changes_unheard channel={channel} reason=\"{e}\" near_window_ms={}", super::near::NEAR_WINDOW.as_millis());
                }
                failing = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}
