//! `ConcurrencyActor`: owns the login limits — in total, per site, per (site, account).
//!
//! Messages: [`Limits`] (the limits in force), [`SetLimits`] (change them at run time).

use actix::prelude::*;
use serde::Serialize;

use crate::config::ConcurrencyConfig;
use crate::error::{Error, Result};

/// The three limits on logins in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotLimits {
    pub global: u32,
    pub per_site: u32,
    pub per_account: u32,
}

pub struct ConcurrencyActor {
    limits: SlotLimits,
}

impl ConcurrencyActor {
    pub fn new(config: &ConcurrencyConfig) -> ConcurrencyActor {
        ConcurrencyActor {
            limits: SlotLimits {
                global: config.max_concurrent_acquisitions,
                per_site: config.max_concurrent_per_site,
                per_account: config.max_concurrent_per_account,
            },
        }
    }
}

impl Actor for ConcurrencyActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "SlotLimits")]
pub struct Limits;

impl Handler<Limits> for ConcurrencyActor {
    type Result = MessageResult<Limits>;

    fn handle(&mut self, _: Limits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.limits)
    }
}

/// Replaces the limits; every limit must be at least 1.
#[derive(Message)]
#[rtype(result = "Result<SlotLimits>")]
pub struct SetLimits(pub SlotLimits);

impl Handler<SetLimits> for ConcurrencyActor {
    type Result = Result<SlotLimits>;

    fn handle(&mut self, SetLimits(limits): SetLimits, _: &mut Context<Self>) -> Self::Result {
        if limits.global == 0 || limits.per_site == 0 || limits.per_account == 0 {
            return Err(Error::invalid("limits", "every limit must be at least 1"));
        }
        log::info!(
            "event=limits_changed global={} per_site={} per_account={}",
            limits.global,
            limits.per_site,
            limits.per_account
        );
        self.limits = limits;
        Ok(limits)
    }
}
