//! Compiles `fleetpulse/v1/*.proto` without a system `protoc`: `protox` parses the files into a
//! descriptor set in pure Rust, `tonic-prost-build` generates messages and services from it, and
//! `pbjson-build` adds the proto3 JSON mapping (serde) used by NDJSON import and `inspect`.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "fleetpulse/v1/telemetry.proto",
    "fleetpulse/v1/ingest.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, ["."])?;
    let descriptor_path = out_dir.join("fleetpulse_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds.clone())?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .build(&[".fleetpulse"])?;
    Ok(())
}
