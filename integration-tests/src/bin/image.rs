//! `image`: writes one of the container images of [`integration_tests::images`] as an OCI archive, loadable by
//! `docker load`, `ctr images import` and `skopeo`. `scripts/image` runs it for the groundwork image after
//! building the static daemons; `image --help` lists the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use integration_tests::{images, workspace_root};

/// Writes a container image as an OCI archive (no registry, no container engine).
#[derive(Debug, Parser)]
#[command(name = "image")]
struct Args {
    /// Which image.
    #[arg(value_enum)]
    which: Which,
    /// The image's name, `repository:tag` (groundwork: ghcr.io/groundwork/groundwork:<chart appVersion>).
    #[arg(long)]
    reference: Option<String>,
    /// Directory holding the static daemons (groundwork only).
    #[arg(long)]
    binaries: Option<PathBuf>,
    /// Where to write the archive.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    /// The four groundwork daemons.
    Groundwork,
    /// The Pod sandbox (Kubernetes' pause.c, static).
    Pause,
    /// etcd, from the vendored binary.
    Etcd,
    /// busybox httpd, the demo backend.
    Httpd,
    /// CoreDNS, the cluster DNS.
    Coredns,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let root = workspace_root();
    let spec = match args.which {
        Which::Groundwork => {
            let reference = args.reference.clone().unwrap_or_else(|| {
                format!(
                    "{}:{}",
                    images::GROUNDWORK_REPOSITORY,
                    env!("CARGO_PKG_VERSION")
                )
            });
            let binaries = args
                .binaries
                .clone()
                .unwrap_or_else(|| images::static_binaries_dir(&root));
            images::groundwork(&binaries, &reference)
        }
        Which::Pause => images::pause(&root.join("target/images/work")),
        Which::Etcd => images::etcd(),
        Which::Httpd => images::httpd(),
        Which::Coredns => images::coredns(),
    };
    let written = spec.and_then(|spec| spec.write(&args.out));
    match written {
        Ok(w) => {
            println!(
                "{}: {} ({} compressed, {} unpacked), image ID {}, manifest {}",
                args.out.display(),
                w.reference,
                mib(w.layer_size),
                mib(w.unpacked_size),
                w.config_digest,
                w.manifest_digest
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mib(bytes: u64) -> String {
    // Sizes are far below 2^52, where f64 stops being exact.
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!("{mib:.1} MiB")
}
