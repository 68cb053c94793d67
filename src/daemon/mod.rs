//! The running daemon's frame: [`server`] (builds the parts in order, serves, stops them in
//! order), [`checks`] (what would fail later, found at start), [`logging`], [`systemd`]
//! (readiness), [`shutdown`] (what a stop cuts at the end of its grace) and [`resources`]
//! (the process's own memory, CPU and files).
pub(crate) mod checks;
pub(crate) mod logging;
pub(crate) mod resources;
pub mod server;
pub(crate) mod shutdown;
pub(crate) mod systemd;
