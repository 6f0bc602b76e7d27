fn main() -> std::process::ExitCode {
    weir_cli::main()
}
