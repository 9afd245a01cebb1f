//! synod's runtime: the edges of a node that touch the network.
//!
//! - [`proto`]: etcd's v3 gRPC API, generated at build time from the protos
//!   in `proto/` without `protoc`, so etcdctl and etcd's client libraries
//!   talk to synod unchanged.
//! - [`transport`]: Paxos envelopes between members over authenticated,
//!   length-framed TCP connections with bounded queues.
//! - [`client_port`]: gRPC, `/health` and `/metrics` on one address, as etcd
//!   serves them on its client URL.
//!
//! The node runtime that joins them to the Multi-Paxos core
//! ([`paxos::multi::Replica`]) and the key-value state machine comes next.
#![deny(missing_docs)]

pub mod api;
pub mod client_port;
pub mod node;
pub mod proto;
pub mod transport;
