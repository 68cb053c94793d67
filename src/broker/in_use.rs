//! The tokens handed out on sites with validity probes (SPEC §13), which the probes check.

use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens handed out, per site: credential id → account.
#[derive(Default)]
pub(crate) struct InUse(Mutex<HashMap<String, HashMap<i64, String>>>);

impl InUse {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<i64, String>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn mark(&self, site: &str, credential_id: i64, account: &str) {
        let mut sites = self.lock();
        let accounts = sites.entry(site.to_string()).or_default();
        accounts
            .entry(credential_id)
            .or_insert_with(|| account.to_string());
    }

    pub(super) fn of(&self, site: &str) -> Vec<(i64, String)> {
        let mut list: Vec<(i64, String)> = self
            .lock()
            .get(site)
            .map(|a| a.iter().map(|(id, acc)| (*id, acc.clone())).collect())
            .unwrap_or_default();
        list.sort();
        list
    }

    pub(super) fn forget(&self, site: &str, credential_id: i64) {
        if let Some(accounts) = self.lock().get_mut(site) {
            accounts.remove(&credential_id);
        }
    }
}
