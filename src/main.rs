//! The `tokend` binary: everything is in the library; see `tokend --help`.

fn main() {
    std::process::exit(tokend::cli::main());
}
