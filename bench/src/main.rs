//! `cargo run --release -p ratatoskr-bench -- [--duration SECS] [--connections N] [--tiny] …`
//! (`--help` for every flag). Writes `docs/benchmarks.md` and `docs/benchmarks.svg`.

use ratatoskr_bench::options::Options;

fn main() {
    let options = match Options::parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err((message, help)) => {
            if help {
                print!("{message}");
                std::process::exit(0);
            }
            eprint!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(e) = ratatoskr_bench::run(&options) {
        eprintln!("ratatoskr-bench: {e}");
        std::process::exit(1);
    }
}
