//! The `keyward` binary: everything lives in the library, see `keyward::cli`.

fn main() -> std::process::ExitCode {
    keyward::cli::main()
}
