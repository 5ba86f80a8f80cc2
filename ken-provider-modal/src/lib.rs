//! Ken sandbox provider for Modal, over Modal's gRPC protocol.
