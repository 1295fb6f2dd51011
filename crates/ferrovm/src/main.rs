//! ferrovm: a KVM machine emulator with QEMU's command line and QMP monitor.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match cli::parse(args) {
        Ok(cli::Action::Run(config)) => config,
        Ok(cli::Action::Version) => {
            print!("{}", cli::version_text());
            return ExitCode::SUCCESS;
        }
        Ok(cli::Action::Help) => {
            print!("{}", cli::help_text());
            return ExitCode::SUCCESS;
        }
        Ok(cli::Action::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ferrovm: {e}");
            return ExitCode::FAILURE;
        }
    };
    if config.list_data_dirs {
        // `-L help`: QEMU lists the firmware directories and exits 0.
        for d in vmm::firmware_file::search_dirs(&config.data_dirs) {
            println!("{}", d.display());
        }
        return ExitCode::SUCCESS;
    }
    match vmm::run(*config) {
        // `-action panic=exit-failure`: QEMU's exit status 1.
        Ok(vmm::Exit::GuestPanicFailure) => ExitCode::FAILURE,
        Ok(exit) => {
            if let vmm::Exit::Signal(sig) = exit {
                // QEMU prints the same line and exits 0 on SIGINT/SIGTERM.
                eprintln!("ferrovm: terminating on signal {sig}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrovm: {e}");
            ExitCode::FAILURE
        }
    }
}
