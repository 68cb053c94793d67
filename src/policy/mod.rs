//! The slow path's policies: which account logs in ([`selection`]), how many logins an hour
//! may make ([`budget`]), whether the site is paused ([`circuit`]), how many logins may run at
//! once when the portal pushes back ([`adaptive`]), and the vocabulary of results and
//! penalties they all speak ([`outcome`]).
pub(crate) mod adaptive;
pub mod budget;
pub(crate) mod circuit;
pub(crate) mod outcome;
pub(crate) mod selection;
