//! `google.rpc.Status`, the payload of the `grpc-status-details-bin` trailer, which
//! carries status details such as [`RpcRetryPolicy`](super::modal_client::RpcRetryPolicy).

/// `google.protobuf.Any`: a message with its type URL.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// Type URL, for example `type.googleapis.com/modal.client.RPCRetryPolicy`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.Status{code=1, message=2, details=3}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}
