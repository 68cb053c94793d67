//! Around a token's life: [`captcha`] (challenges only a person can answer), [`checkout`]
//! (an account held for one job), [`webhook`] (alerts and captchas announced by POST) and
//! [`robots`] (the same, to WeCom, DingTalk and Feishu group robots). Validity probes live in
//! the broker.
pub(crate) mod captcha;
pub mod checkout;
pub mod robots;
pub(crate) mod webhook;
