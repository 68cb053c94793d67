//! The Lua scripts, one file each in `scripts/`, loaded at build time. One convention: every
//! key a script touches comes in KEYS (none is built inside a script, so that Redis Cluster
//! can route it), all of one hash tag ([`super::keys`]); each file starts with a table of its
//! KEYS and ARGV. Each script is hashed once and sent by `EVALSHA` (loaded on a `NOSCRIPT`).

use std::sync::LazyLock;

use ::redis::Script;

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident => $file:literal,)*) => {
        $(
            $(#[$doc])*
            pub static $name: LazyLock<Script> =
                LazyLock::new(|| Script::new(include_str!(concat!("scripts/", $file))));
        )*
        /// Every script's file name and text, for the checks of the convention.
        #[cfg(test)]
        const ALL: &[(&str, &str)] = &[$(($file, include_str!(concat!("scripts/", $file)))),*];
    };
}

scripts! {
    /// A fenced token write, refused over a tombstone.
    TOKEN_SET => "token_set.lua",
    /// A cache entry deleted, and the change published.
    CACHE_DELETE => "cache_delete.lua",
    /// One try at a login slot (grant, or a place in the queue).
    SLOTS_GRANT => "slots_grant.lua",
    SLOTS_RELEASE => "slots_release.lua",
    SLOTS_RENEW => "slots_renew.lua",
    SLOTS_USAGE => "slots_usage.lua",
    SLOTS_CLEANUP => "slots_cleanup.lua",
    /// An account's single-flight lock.
    LOCK_TAKE => "lock_take.lua",
    LOCK_RELEASE => "lock_release.lua",
    LOCK_RENEW => "lock_renew.lua",
    /// A site's circuit (SPEC §11).
    CIRCUIT_FAILURE => "circuit_failure.lua",
    CIRCUIT_ADMIT => "circuit_admit.lua",
    CIRCUIT_VIEW => "circuit_view.lua",
    CIRCUIT_PAUSE => "circuit_pause.lua",
    /// Logins per sliding hour.
    BUDGET_TAKE => "budget_take.lua",
    BUDGET_COUNT => "budget_count.lua",
    /// One AIMD step of a site's limit.
    AIMD_STEP => "aimd_step.lua",
    /// Job checkouts.
    CHECKOUT_HOLD => "checkout_hold.lua",
    CHECKOUT_RENEW => "checkout_renew.lua",
    CHECKOUT_RELEASE => "checkout_release.lua",
    CHECKOUT_SWEEP => "checkout_sweep.lua",
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers `name[N]` a text mentions.
    fn indexes(text: &str, name: &str) -> Vec<String> {
        text.match_indices(&format!("{name}["))
            .map(|(at, m)| {
                let rest = &text[at + m.len()..];
                rest[..rest.find(']').unwrap_or(0)].to_string()
            })
            .collect()
    }

    /// Each script starts with its table, and every KEYS and ARGV it uses is in it; no key is
    /// built in a script (no `..` concatenation names a key in a `redis.call`).
    #[test]
    fn every_script_documents_its_keys_and_arguments_and_builds_no_key() {
        for (file, text) in ALL {
            let (head, body): (Vec<&str>, Vec<&str>) =
                text.lines().partition(|l| l.starts_with("--"));
            let (head, body) = (head.join("\n"), body.join("\n"));
            assert!(head.contains("| KEYS["), "{file}: no KEYS table");
            for (name, used) in [
                ("KEYS", indexes(&body, "KEYS")),
                ("ARGV", indexes(&body, "ARGV")),
            ] {
                for n in used {
                    let documented = head.contains(&format!("{name}[{n}]"))
                        || (name == "KEYS" && head.contains("KEYS[1..n]"))
                        || (n == "i" && head.contains(&format!("{name}[1]")));
                    assert!(documented, "{file}: {name}[{n}] is not in its table");
                }
            }
            for line in body.lines().filter(|l| l.contains("redis.call(")) {
                let call = &line[line.find("redis.call(").unwrap()..];
                let first_arg = call.split(',').nth(1).unwrap_or("");
                assert!(
                    !first_arg.contains(".."),
                    "{file}: a key built in the script: {line}"
                );
            }
        }
    }
}
