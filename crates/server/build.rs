//! Generates the etcd v3 API types, gRPC server traits and clients from the
//! hand-written protos in `proto/`.
//!
//! No `protoc` is needed: `protox` (a protobuf compiler written in Rust)
//! parses the protos into a `FileDescriptorSet`, and `tonic-prost-build`
//! generates code from that set directly.

use std::error::Error;

/// The protos to compile, relative to the crate root; imports resolve under
/// `proto/`.
const PROTOS: [&str; 2] = ["proto/etcdserverpb/rpc.proto", "proto/mvccpb/kv.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
