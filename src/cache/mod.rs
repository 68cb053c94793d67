//! The cache: in-process ([`MemoryStore`](memory::MemoryStore), the default) or Redis
//! ([`RedisStore`]), one interface ([`CacheStore`]), and the pipeline's typed view of it
//! ([`TokenCache`]).
//!
//! Keys are `{key_prefix}:{kind}:{{site}}[:{account}]` ([`crate::redis::keys`]), so that one
//! site's keys, or all of tokend's, can be found by prefix. With Redis, every call goes
//! through the one Redis link and its breaker ([`crate::redis`]).
//!
//! | file | idea |
//! |---|---|
//! | `store.rs`, `memory.rs`, `redis_store.rs` | where entries live |
//! | `entries.rs` | what is stored: token and credential entries, blocks |
//! | `kinds.rs` | the cache kinds and their hit/miss/error counters |
//! | `guarded.rs` | counting failures by kind (the breaker is the Redis link's) |
//! | `near.rs` | the in-process copies: near cache and decoded entries |
//! | `tokens.rs` | [`TokenCache`], the typed reads and writes the pipeline makes |
//! | `health.rs` | the backend's state for `/health` (its sweep, probe and health question: `actors::cache`) |

pub mod entries;
pub mod guarded;
pub mod kinds;
pub mod listener;
pub mod memory;
pub mod near;
pub mod redis_store;
pub mod store;
pub mod tokens;

pub use entries::{margin, CachedToken, CredentialEntry, ReadyHeaders};
pub use kinds::{CacheCounters, CacheKind, KindCounts};
pub use redis_store::RedisStore;
pub use store::CacheStore;
pub use tokens::TokenCache;
