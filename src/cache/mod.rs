//! The cache: in-process ([`MemoryStore`](memory::MemoryStore), the default) or Redis
//! ([`RedisStore`]), one interface ([`CacheStore`]), and the pipeline's typed view of it
//! ([`TokenCache`]).
//!
//! Keys are `{key_prefix}:{kind}:{site}[:{account}]` ([`keys`]), so that one site's keys, or
//! all of tokend's, can be found by prefix.
//!
//! | file | idea |
//! |---|---|
//! | `store.rs`, `memory.rs`, `redis_store.rs` | where entries live |
//! | `keys.rs` | the key scheme |
//! | `entries.rs` | what is stored: token and credential entries, blocks |
//! | `kinds.rs` | the cache kinds and their hit/miss/error counters |
//! | `breaker.rs`, `guarded.rs` | leaving a failed Redis alone; counting failures by kind |
//! | `near.rs` | the in-process copies: near cache and decoded entries |
//! | `tokens.rs` | [`TokenCache`], the typed reads and writes the pipeline makes |
//! | `health.rs` | the backend's state for `/health` (its sweep, probe and health question: `actors::cache`) |

pub mod breaker;
pub mod entries;
pub mod guarded;
pub mod health;
pub mod keys;
pub mod kinds;
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
