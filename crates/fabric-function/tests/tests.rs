//! Integration tests of the composition function: the pure call, the real
//! gRPC server (insecure and mTLS), the generated XRDs, and property tests.
//! One test binary (`autotests = false`) keeps the build small.

mod support;

mod fleet_credential;
mod flows;
mod grpc;
mod image;
mod props;
mod terraform_reads;
mod xrd;
