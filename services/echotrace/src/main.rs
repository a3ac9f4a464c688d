//! The `echotrace` binary: parses the command line and hands over to [`echotrace::cli`].

fn main() -> std::process::ExitCode {
    echotrace::cli::main()
}
