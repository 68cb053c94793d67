//! What the court portals (SPEC §15) need beyond a recipe: `court_zxfw` (人民法院在线服务)
//! and `court_baoquan` (保全系统) run as the built-in recipes of those names
//! (`examples/recipes/court_*.toml`, see `drivers::recipe`); here are the parts those recipes
//! call on: the [`solver`] that reads captchas (a program, or a person through the hand-off),
//! [`sm2`] (the zxfw password encryption) and `portal` (the login's client and the logged form
//! of an answer), which `derived` sites use too.

pub(crate) mod portal;
pub mod sm2;
pub mod solver;
