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
    send(NotifyState::Ready, "ready");
}

/// STOPPING=1: call when a graceful stop begins.
pub fn stopping() {
    send(NotifyState::Stopping, "stopping");
}
