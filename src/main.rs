use clap::Parser;

fn main() {
    // PID 1 of the recovery image, or its /sbin/modprobe: never returns then.
    rewind::init::dispatch();
    let cli = rewind::cli::Cli::parse();
    if let Err(e) = rewind::cli::run(cli) {
        eprintln!("rewind: error: {e:#}");
        std::process::exit(1);
    }
}
