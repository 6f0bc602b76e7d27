//! The `weir` command, built inside this package so end-to-end tests can run
//! it as a separate process (to SIGKILL it) via `CARGO_BIN_EXE_weir-under-test`.
fn main() -> std::process::ExitCode {
    weir_cli::main()
}
