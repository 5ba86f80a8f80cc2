//! A Modal gRPC test server on 127.0.0.1 for Ken's tests.
