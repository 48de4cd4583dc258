//! `sluice-controller --config FILE <command>`: the controller's commands
//! without the rest of sluice (the same as `sluice controller`).
use clap::Parser;

#[derive(Parser)]
#[command(name = "sluice-controller", about = "sluice's management plane")]
struct Cli {
    /// The controller's configuration file.
    #[arg(short, long, default_value = sluice_controller::cli::DEFAULT_CONFIG, global = true)]
    config: std::path::PathBuf,
    #[command(subcommand)]
    cmd: sluice_controller::cli::Command,
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match sluice_controller::cli::main(&cli.config, cli.cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-controller: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
