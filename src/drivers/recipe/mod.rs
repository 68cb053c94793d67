//! `driver = "recipe"` (issue 26): a portal's login described as data. A [`format::Recipe`]
//! (TOML) lists steps; one attempt runs them in order on one cookie-keeping client that
//! follows no redirect: each step computes variables ([`expr`]), sends a request, classifies
//! the answer (rate limit, captcha error, credential error, success), reads a captcha and
//! takes values from the answer; the `[token]` table says where the token and its life are
//! and which header consumers send it in.
//!
//! Every step is written to a [`Trace`](attempt::Trace) (request line, status, the answer's shape, the
//! variables set, secrets masked): `tokend recipe check` prints it as it goes, and a login
//! whose answer the recipe does not recognise logs it (`event=recipe_trace`).

mod answer;
mod attempt;
pub mod check;
mod ciphers;
mod driver;
pub mod expr;
pub mod format;

pub use driver::{recipe_of, RecipeDriver};
