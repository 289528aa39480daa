//! `lab`: the whole groundwork system on one machine (see `docs/lab.md`). `scripts/lab up|down|status`
//! builds the binaries and runs this.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use integration_tests::images;
use integration_tests::lab::{self, state::StateDir, system};

/// Runs the groundwork lab: control plane, DNS etcd, two lb-controllers, a speaker per node namespace,
/// dns-sync, two dns-servers and the seed scenario, checked from a client namespace; with `up --kubelets`,
/// the same on real nodes with the Helm chart.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Where the lab records its processes, namespaces, logs and kubeconfig. Use another one to run a
    /// second, independent lab (the tests do).
    #[arg(long, global = true, env = "GROUNDWORK_LAB_DIR", default_value = lab::state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Action,
}

/// Which lab `up` starts.
#[derive(clap::Args, Debug, Clone)]
struct Mode {
    /// Real nodes instead of processes: containerd, kubelet and kube-proxy in each node namespace, and the
    /// Helm chart installed from the image (slower; needs `scripts/image` and the kubelet peers).
    #[arg(long)]
    kubelets: bool,
    /// The groundwork image archive the chart runs (with --kubelets).
    #[arg(long, default_value = images::GROUNDWORK_ARCHIVE)]
    image: PathBuf,
}

impl Mode {
    fn kind(&self) -> system::Kind {
        if self.kubelets {
            let image = if self.image.is_absolute() {
                self.image.clone()
            } else {
                integration_tests::workspace_root().join(&self.image)
            };
            system::Kind::Kubelets(image)
        } else {
            system::Kind::Processes
        }
    }
}

#[derive(Subcommand)]
enum Action {
    /// Brings the lab up (cleaning a crashed lab's leftovers first) and prints the summary.
    Up(Mode),
    /// Stops every process the lab started and removes its namespaces.
    Down,
    /// Prints the running lab's summary.
    Status,
    /// The supervisor `up` starts in the background (not for direct use).
    #[command(hide = true)]
    Supervise(Mode),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let down_hint = if cli.state_dir == std::path::Path::new(lab::state::DEFAULT_STATE_DIR) {
        "scripts/lab down".to_owned()
    } else {
        format!("scripts/lab down --state-dir {}", cli.state_dir.display())
    };
    let dir = StateDir::new(cli.state_dir);
    let result = match cli.command {
        Action::Up(mode) => lab::up(&dir, &mode.kind(), &mut std::io::stdout()).map(|summary| {
            println!("\nlab is up:");
            for line in summary {
                println!("  {line}");
            }
            println!("  stop it with: {down_hint}");
        }),
        Action::Down => lab::state::tear_down(&dir, lab::DOWN_GRACE).map(|done| {
            if done.supervisor_stopped {
                println!("lab stopped: every process it started, its namespaces and its files");
            } else {
                println!("no running lab supervisor; cleaned up what was recorded");
            }
            if !done.stopped.is_empty() {
                println!("  stopped by PID: {}", done.stopped.join(", "));
            }
            if !done.namespaces_removed.is_empty() {
                println!(
                    "  removed namespaces: {}",
                    done.namespaces_removed.join(", ")
                );
            }
        }),
        Action::Status => lab::status(&dir).map(|lines| {
            for line in lines {
                println!("{line}");
            }
        }),
        Action::Supervise(mode) => system::supervise(dir, mode.kind()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::FAILURE
        }
    }
}
