//! The acquisition pipeline (SPEC §1): a caller asks for a token for a site and gets a valid
//! one — from the cache in microseconds, or after exactly one login.
//!
//! - [`request`]: what a caller sends and gets back.
//! - [`pipeline`]: [`Broker::acquire`] takes the hot path first: a cached token with more
//!   than `refresh_ahead` seconds left is returned without touching an actor or the database.
//! - Otherwise [`login`] chooses the accounts to try ([`candidates`]), and for each takes the
//!   account's single-flight lock, a login slot, looks again (cache, then the `tokens` table),
//!   and logs in through the site's driver.
//! - [`refresh`] renews tokens in use in the background before they get close to expiry.
//! - [`probe`] checks tokens in use ([`in_use`]) at the portal and replaces those it refuses.
//! - [`checkout`]: job checkouts (an account held for one job, see [`crate::lifecycle::checkout`]).
//! - [`states`] (penalties, blocks and the sites' reports), [`token_status`] (what the
//!   dashboard shows of each account's token), [`derived`] (tokens obtained from a parent
//!   site's token).
//!
//! The files depend one way: `request` and `in_use` on nothing here, `pipeline` on those,
//! the others on `pipeline` (they add methods to [`Broker`]); this file only declares them.

mod candidates;
mod checkout;
mod derived;
mod in_use;
mod login;
mod pipeline;
mod probe;
mod refresh;
mod request;
mod states;
mod token_status;

pub use candidates::WarmUp;
pub use checkout::{CheckedOut, CheckoutOutcome, CheckoutRequest, ReleaseRequest, RenewRequest};
pub use pipeline::{Acquired, Broker, BrokerParts};
pub use request::{ready_headers, AcquireRequest, AcquiredToken, Source};
pub use states::SiteReport;
pub use token_status::TokenStatus;
