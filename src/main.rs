use clap::Parser;

fn main() {
    let cli = rewind::cli::Cli::parse();
    if let Err(e) = rewind::cli::run(cli) {
        eprintln!("rewind: error: {e:#}");
        std::process::exit(1);
    }
}
