//! The `nexus` binary; see the `nexus_cli` library.

fn main() -> std::process::ExitCode {
    nexus_cli::main()
}
