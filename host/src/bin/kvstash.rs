//! The `kvstash` command; everything lives in [`kvstash::cli`].

fn main() -> std::process::ExitCode {
    kvstash::cli::main()
}
