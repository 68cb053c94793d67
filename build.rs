//! Link options of the release binary, for its idle memory (README, Benchmarks: idle RSS):
//!
//! - relative relocations packed (`-z pack-relative-relocs`, DT_RELR): the 1.2 MB
//!   `.rela.dyn` the dynamic loader reads whole at every start becomes about 16 KB;
//! - the code ordered by `tools/text-order/order.txt` (`--symbol-ordering-file`): the
//!   functions a running daemon uses, in the order it first runs them, come first in
//!   `.text`, so that they fill a few pages instead of touching nearly all of them.
//!
//! Only where it is safe: a release build for x86_64 Linux with glibc, linked by Rust's
//! default linker there (`rust-lld`, since Rust 1.90; not when a linker is configured), and
//! DT_RELR only with a glibc of at least 2.36 on the building machine (older loaders refuse
//! such a binary). Anywhere else the binary is the same, only larger when running.

use std::process::Command;

const ORDER: &str = "tools/text-order/order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // Debug and test builds: nothing to do, and nothing to rerun for.
    if var("PROFILE") != "release" || var("TARGET") != "x86_64-unknown-linux-gnu" {
        return;
    }
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let default_linker = var("RUSTC_LINKER").is_empty()
        && !flags.contains("linker")
        && !flags.contains("link-self-contained")
        && rustc_minor() >= 90;
    if !default_linker {
        return;
    }
    if host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER);
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // A name the code no longer has is expected after changes, not worth a warning.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version of the compiler (`rustc 1.95.0 …` → 95); 0 when it cannot be told.
fn rustc_minor() -> u32 {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let version = text.split_whitespace().nth(1)?.to_owned();
            version.split('.').nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The building machine's glibc version (`getconf GNU_LIBC_VERSION`, "glibc 2.36") is at
/// least `major.minor`; false when it cannot be told.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(output) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    found >= (major, minor)
}
