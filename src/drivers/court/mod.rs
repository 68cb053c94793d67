//! The court portal drivers (SPEC §15), spoken natively: [`zxfw`] (人民法院在线服务: SM2
//! password, image captcha, JWT) and [`baoquan`] (保全系统: a token derived from the zxfw
//! token through an OAuth code), with the [`solver`] that reads captchas and [`sm2`].
//!
//! What their steps share (the portal's client, envelope and failure classification) lives
//! in `portal`, a leaf that `derived` sites use too.

pub mod baoquan;
pub(crate) mod portal;
pub mod sm2;
pub mod solver;
pub mod zxfw;
