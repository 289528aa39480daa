//! Generates the controller<->speaker gRPC code from `proto/` at build time (needs `protoc` on PATH or
//! `PROTOC`), so the `.proto` file is the single source and nothing generated is checked in.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/groundwork/announce/v1/announce.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().compile_protos(&[proto], &["proto"])?;
    Ok(())
}
