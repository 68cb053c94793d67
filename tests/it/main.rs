//! tokend's integration tests, one crate (one link): each former test binary is a module,
//! the helpers they share are in `support`. Run one group with
//! `cargo test --test it MODULE::`.

mod support;

mod accounts;
mod admin;
mod alerts_cli;
mod auth_roles;
mod captcha_dashboard;
mod checkouts;
mod court_portals;
mod dashboard;
mod failure_policy;
mod faults;
mod fencing;
mod history_faults;
mod http_protections;
mod install;
mod json_bodies;
mod leaks;
mod limits;
mod lock_faults;
mod migrations;
mod near_cache;
mod newcomer_cli;
mod openapi;
mod operations;
mod password_prompt;
mod paths;
mod pg_failover;
mod pipeline;
mod prometheus;
mod quick_start;
mod recipes;
mod redis_faults;
mod redis_ha;
mod robots;
mod rough_edges;
mod serve;
mod shutdown;
mod signals;
mod site_policies;
mod slots_property;
mod soak;
mod startup;
mod systemd;
mod token_cli;
mod token_lifecycle;
