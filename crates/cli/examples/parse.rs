//! Parse a command line and print the Config (or the error), as the binary would:
//! `cargo run -p cli --example parse -- -m 1G -smp 2`; `-- --md` prints the option reference.

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.first().map(|s| s.as_str()) == Some("--md") {
        print!("{}", cli::options_markdown());
        return;
    }
    match cli::parse(a) {
        Ok(cli::Action::Help) => print!("{}", cli::help_text()),
        Ok(cli::Action::Version) => print!("{}", cli::version_text()),
        Ok(cli::Action::Print(text)) => print!("{text}"),
        Ok(cli::Action::Run(c)) => {
            for w in &c.warnings {
                eprintln!("ferrovm: {w}");
            }
            println!("{c:#?}")
        }
        Err(e) => {
            eprintln!("ferrovm: {e}");
            std::process::exit(1)
        }
    }
}
