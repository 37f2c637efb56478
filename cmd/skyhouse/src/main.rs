//! The `skyhouse` binary: one subcommand per service. Thin: parse, validate, call a library.
fn main() {}
