//! Wire messages of Modal's gRPC protocol, derived by hand with `prost`.
//!
//! Building needs no `protoc`: every message is a `prost::Message` struct written
//! from the field numbers in `shared/specs/modal.md`. Field names follow Modal's
//! public protos for readability; only the numbers and types matter on the wire.
//! Log and output text is declared as `bytes` (wire compatible with `string`, and
//! never fails on invalid UTF-8).
//!
//! These types are shared with the test server `ken-testserver-modal`: add fields,
//! never rename or renumber them.

pub mod headers;
pub mod modal_client;
pub mod paths;
pub mod rpc_status;
pub mod task_command_router;
