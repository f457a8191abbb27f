//! The Fleetpulse wire protocol.
//!
//! Generated from `proto/fleetpulse/v1/*.proto` by `build.rs` (no system `protoc` needed).
//! Only these types cross process boundaries between agents, collectors and third-party
//! senders. Every message also implements serde `Serialize`/`Deserialize` following the
//! proto3 JSON mapping (camelCase names, enum names as strings, 64-bit integers as strings).

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("fleetpulse.v1");
    include!(concat!(env!("OUT_DIR"), "/fleetpulse.v1.serde.rs"));
}

/// Encoded `FileDescriptorSet` of the protocol, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fleetpulse_descriptor");

/// Re-export of the well-known types used in the protocol (`Timestamp`).
pub use pbjson_types;
