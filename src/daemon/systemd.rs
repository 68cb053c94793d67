//! systemd readiness notification (`Type=notify`). Outside systemd (no `NOTIFY_SOCKET`)
//! every call does nothing.

use sd_notify::NotifyState;

fn send(state: NotifyState<'_>, event: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[state]) {
        log::warn!("event=sd_notify_failed state={event} error=\"{e}\"");
    }
}

/// READY=1: call once the database, the actors and the HTTP listener are up.
pub fn ready() {
    log::info!("event=ready");
    send(NotifyState::Ready, "ready");
}

/// STOPPING=1: call when a graceful stop begins.
pub fn stopping() {
    send(NotifyState::Stopping, "stopping");
}

/// With `WatchdogSec=` set, pings systemd every half period — but only while the actor system
/// answers, so that a stuck daemon stops pinging and systemd restarts it.
pub fn start_watchdog(monitor: actix::Addr<crate::watch::monitor::MonitorActor>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    log::info!("event=watchdog_enabled period={}s", period.as_secs_f64());
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tick.tick().await;
            let alive =
                tokio::time::timeout(period / 4, monitor.send(crate::watch::monitor::Snapshot))
                    .await;
            match alive {
                Ok(Ok(_)) => send(NotifyState::Watchdog, "watchdog"),
                _ => log::error!("event=watchdog_ping_skipped reason=actor_system_unresponsive"),
            }
        }
    });
}
